"""Workers' notes for `wfl status RUN --why` (wfl/codestate.py) on both stores: files in a
journal directory, rows of wfl_notes in PostgreSQL (schema version 2, migrated from 1)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pg_cluster import wait_until
from test_cli import Wfl, wfl

from wfl import Client, codestate
from wfl.stores import open_store

SOURCE = """
    from wfl import Step, WorkflowManager

    workflow = WorkflowManager()

    @workflow.define
    async def broken(step: Step) -> int:
        return 1
    """


class StoreWfl(Wfl):
    """`wfl` bound to one store (passed as --store)."""

    def __init__(self, tmp: Path, store: str) -> None:
        super().__init__(tmp)
        self.store = store

    def __call__(self, *args: str | Path, timeout: float = 60) -> Any:
        return wfl(*args, "--store", self.store, cwd=self.tmp, timeout=timeout)

    def peek(self, run_id: str) -> dict[str, Any]:
        return Client(store=self.store).status(run_id).to_dict()


def test_why_names_the_error_of_a_flow_that_does_not_import_on_both_stores(
    store_spec: str, tmp_path: Path
) -> None:
    cli = StoreWfl(tmp_path, store_spec)
    flow = tmp_path / "broken.py"
    flow.write_text(textwrap.dedent(SOURCE))
    run_id = cli.start(str(flow))
    flow.write_text(textwrap.dedent(SOURCE) + "\ndef broken(:\n")
    cli.drive()
    assert cli.peek(run_id)["state"] == "in_progress"
    why = cli.why(run_id)
    assert "the worker cannot load workflow 'broken'" in why
    assert "SyntaxError" in why
    assert f"{flow}:" in why
    notes = open_store(store_spec).notes
    assert notes is not None
    (note,) = notes.all(codestate.UNLOADABLE)
    assert note["workflow"] == "broken"
    assert "SyntaxError" in note["reason"]
    flow.write_text(textwrap.dedent(SOURCE))  # fixed: the next worker runs it
    assert "has changed since" in cli.why(run_id)
    cli.drive()
    assert cli.peek(run_id)["state"] == "completed"
    assert "cannot load" not in cli.why(run_id)
    assert notes.all(codestate.UNLOADABLE) == []  # the worker that loaded it cleared it


def test_notes_of_changed_code_count_only_while_their_worker_listens(store_spec: str) -> None:
    store = open_store(store_spec)
    store.ensure()
    notes = store.notes
    opened = store.listen()
    assert opened is not None
    assert notes is not None
    token, listener = opened
    codestate.publish_changed(notes, token, ["/app/flows.py"])
    assert codestate.stale_workers(notes) == [{"pid": os.getpid(), "changed": ["/app/flows.py"]}]
    codestate.publish_changed(notes, token, [])  # reloaded: nothing waits any more
    assert codestate.stale_workers(notes) == []
    codestate.publish_changed(notes, token, ["/app/flows.py"])
    listener.close()  # the worker is gone (a directory's marker, a PostgreSQL backend)
    wait_until(lambda: codestate.stale_workers(notes) == [])
    codestate.publish_changed(notes, "pg-1", ["/app/other.py"])  # no such worker listens
    assert codestate.stale_workers(notes) == []
    store.close()


def test_schema_1_gains_the_notes_table_and_keeps_its_runs(pg_url: str) -> None:
    import psycopg

    from wfl.stores import pg_schema
    from wfl.stores.postgres import PostgresStore

    client = Client(store=pg_url)
    run_id = client.start(f"{Path(__file__).parent / 'flows.py'}:typed", {"count": 1})
    client.store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as wfl with schema 1 left it
        conn.execute("DROP TABLE wfl_notes")
        conn.execute("CREATE INDEX wfl_runs_wake ON wfl_runs (wake_at) WHERE wake_at IS NOT NULL")
        conn.execute("UPDATE wfl_meta SET value = '1' WHERE key = 'schema'")
    store = PostgresStore(pg_url)
    notes = store.notes
    assert store.read(run_id)[0]["id"] == run_id
    notes.put("unloadable", "k", {"reason": "r"})
    assert notes.get("unloadable", "k") == {"reason": "r"}
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        version = conn.execute("SELECT value FROM wfl_meta WHERE key = 'schema'").fetchone()
        wake = conn.execute("SELECT to_regclass('wfl_runs_wake')").fetchone()
    assert version == (str(pg_schema.SCHEMA_VERSION),)
    assert pg_schema.SCHEMA_VERSION == 4
    assert wake == (None,)  # the index no query used is gone


@pytest.mark.parametrize("kind", ["unloadable", "workers"])
def test_a_note_that_does_not_read_is_skipped(pg_url: str, kind: str) -> None:
    import psycopg

    store = open_store(pg_url)
    store.ensure()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO wfl_notes VALUES (%s, 'x', 'not json')", (kind,))
    assert store.notes is not None
    assert store.notes.get(kind, "x") is None
    assert store.notes.all("unloadable") == []
    store.close()
