"""A run's summary row in PostgreSQL (wfl/stores/pg_summary.py, schema 4): the status is kept
as a list of values beside the row's own columns and read back as the very dict RunState
gives (keys and their order); a status of other keys, or of schema 3, is kept whole."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wfl import journal, records
from wfl.index import RunSummary
from wfl.records import Record
from wfl.state import RunState
from wfl.stores import pg_summary
from wfl.stores.postgres import PostgresStore


@pytest.fixture
def store(pg_url: str) -> Any:
    s = PostgresStore(pg_url)
    yield s
    s.close()


def _start(store: PostgresStore, **run: Any) -> str:
    def make(run_id: str) -> list[Record]:
        fields: dict[str, Any] = {"workflow": "w", "flow": "/nowhere.py", "flow_sha": "",
                                  "args": {"a": 1}, "created_at": 1000.25, "version": 1,
                                  "on_complete": None, "context": None, "parent": None}  # fmt: skip
        first = records.run(run_id=run_id, **{**fields, **run})
        return [first, records.sched(0, "action", "a", {}, 1000.25, 1000.25)]

    return store.create_run(make)


def _stored(url: str, run_id: str) -> list[Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT summary FROM wfl_runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    return journal.decode(bytes(row[0]), refuse_timestamps=False)  # type: ignore[no-any-return]


def _listed(store: PostgresStore) -> dict[str, RunSummary]:
    return {s.id: s for s in store.summaries()}


def test_a_summary_is_kept_compact_and_lists_as_runstate_says(
    store: PostgresStore, pg_url: str
) -> None:
    plain = _start(store)
    child = _start(store, parent=[plain, 0], key="k-1", deadline=2000.5)
    listed = _listed(store)
    for run_id in (plain, child):
        want = RunSummary.of(RunState.from_records(store.read(run_id)))
        got = listed[run_id]
        assert got.to_record() == want.to_record()
        assert json.dumps(got.status) == json.dumps(want.status)  # keys in the same order
        assert isinstance(_stored(pg_url, run_id)[0], list)  # no key names, no id/state/workflow
    assert listed[child].status["parent"] == plain
    assert "parent" not in listed[plain].status


def test_a_status_of_keys_unknown_here_is_kept_whole(
    store: PostgresStore, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    to_dict = RunState.to_dict

    def with_more(self: RunState, *, steps: bool = True) -> dict[str, Any]:
        return {**to_dict(self, steps=steps), "newer": 1}

    monkeypatch.setattr(RunState, "to_dict", with_more)
    run_id = _start(store)
    assert isinstance(_stored(pg_url, run_id)[0], dict)
    assert _listed(store)[run_id].status["newer"] == 1
    assert (
        _listed(store)[run_id].to_record()
        == RunSummary.of(RunState.from_records(store.read(run_id))).to_record()
    )


def test_a_summary_of_schema_3_lists_as_it_was(store: PostgresStore, pg_url: str) -> None:
    import psycopg

    run_id = _start(store, key="k-2")
    whole = RunSummary.of(RunState.from_records(store.read(run_id)))
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as schema 3 wrote it
        conn.execute(
            "UPDATE wfl_runs SET summary = %s WHERE id = %s",
            (journal.pack(whole.to_record()), run_id),
        )
    got = _listed(store)[run_id]
    assert got.to_record() == whole.to_record()
    assert json.dumps(got.status) == json.dumps(whole.status)


def test_a_compact_summary_is_much_smaller_than_a_whole_one(store: PostgresStore) -> None:
    run_id = _start(store)
    summary = RunSummary.of(RunState.from_records(store.read(run_id)))
    assert len(pg_summary.pack(summary)) < 0.6 * len(journal.pack(summary.to_record()))
