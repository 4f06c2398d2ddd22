"""The statements PostgreSQL runs most (a start's, a group commit's) go through libpq directly
(wfl/stores/pg_raw.py): what the server refuses, or a session it ended, is the same one line
as for any other statement, and a NULL parameter is NULL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wfl import Client, records
from wfl.errors import LeaseLost, StoreUnavailable
from wfl.records import Record
from wfl.stores.postgres import PostgresStore

FLOW = f"{Path(__file__).parent / 'flows.py'}:typed"
WFL = str(Path(sys.executable).parent / "wfl")


@pytest.fixture
def client(pg_url: str) -> Any:
    c = Client(store=pg_url)
    yield c
    c.store.close()


def test_a_start_the_server_refuses_is_one_line_of_the_cli(pg_url: str, tmp_path: Path) -> None:
    import psycopg

    PostgresStore(pg_url).ensure()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE wfl_records RENAME TO wfl_records_gone")
    env = {k: v for k, v in os.environ.items() if k not in ("WFL_DIR", "WFL_STORE")}
    done = subprocess.run([WFL, "start", "--store", pg_url, FLOW, "--args-json", '{"count": 1}'],
                          capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1
    assert 'relation "wfl_records" does not exist' in done.stderr


def test_a_start_on_a_session_the_server_ended_is_unavailable_then_reconnects(
    client: Client, pg_url: str
) -> None:
    import psycopg

    first = client.start(FLOW, {"count": 1})
    assert isinstance(client.store, PostgresStore)
    with client.store.session() as conn:
        pid = conn.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreUnavailable, match="is unavailable"):
        client.start(FLOW, {"count": 2})
    second = client.start(FLOW, {"count": 3})  # a new session, its statements prepared again
    assert [client.status(r).args["count"] for r in (first, second)] == [1, 3]


def test_a_group_commit_the_server_refuses_fails_its_appends_in_one_line(pg_url: str) -> None:
    import psycopg

    store = PostgresStore(pg_url)
    try:
        run_id = store.create_run(lambda run_id: _records(run_id))
        store.try_lease(run_id)
        w = store.writer(run_id)
        w.read_all()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE wfl_records RENAME TO wfl_records_gone")
        out = store.append_many([(w, _framed(records.att(0, 1, 1001.0)))])
        assert isinstance(out[0], LeaseLost)  # the worker reloads the run later
        assert 'relation "wfl_records" does not exist' in str(out[0])
        assert "\n" not in str(out[0])
        with store.session() as conn:  # the session lives on
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        store.close()


def test_a_run_created_with_nothing_to_wake_for_has_a_null_wake_time(pg_url: str) -> None:
    import psycopg

    store = PostgresStore(pg_url)
    try:
        run_id = store.create_run(
            lambda run_id: [*_records(run_id)[:1], records.end("completed", 1000.5, result=1)]
        )
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT state, wake_at, created_at FROM wfl_runs WHERE id = %s", (run_id,)
            ).fetchone()
        assert row == ("completed", None, 1000.25)
        assert store.summaries()[0].status["state"] == "completed"
    finally:
        store.close()


def _records(run_id: str) -> list[Record]:
    return [
        records.run(run_id=run_id, workflow="w", flow="/nowhere.py", flow_sha="", args={},
                    created_at=1000.25, version=1, on_complete=None, context=None, parent=None),
        records.sched(0, "action", "a", {}, 1000.25, 1000.25),
    ]  # fmt: skip


def _framed(*rs: Record) -> bytes:
    from wfl import journal

    return b"".join(journal.frame(r) for r in rs)
