"""PostgreSQL's write path (wfl/stores/pg_write.py): a batch of appends to many runs is one
statement and one transaction; a run that others appended to meanwhile is written the careful
way, after their records; `append_many` (the worker's group commit across runs) reports each
run's outcome on its own."""

from __future__ import annotations

from typing import Any

import pytest
from crash_flows.harness import wait_for
from pg_cluster import busy_session

from wfl import journal, records
from wfl.errors import LeaseLost
from wfl.index import RunSummary
from wfl.records import Record
from wfl.state import RunState
from wfl.stores.pg_leases import HELD_FRESH
from wfl.stores.postgres import PostgresStore


def _new_run(store: PostgresStore, n: int) -> str:
    return store.create_run(lambda run_id: _new_records(run_id, n))


def _new_records(run_id: str, n: int = 0) -> list[Record]:
    """The records _new_run(store, n) starts `run_id` with."""
    return [
        records.run(run_id=run_id, workflow=f"w{n}", flow="/nowhere.py", flow_sha="", args={},
                    created_at=1000.0 + n, version=1, on_complete=None, context=None,
                    parent=None),
        records.sched(0, "action", "a", {}, 1000.0, 1000.0),
    ]  # fmt: skip


def _frames(*rs: Record) -> bytes:
    return b"".join(journal.frame(r) for r in rs)


def _xmins(url: str, run_ids: list[str], seq: int) -> set[Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT xmin::text FROM wfl_records WHERE run_id = ANY(%s) AND seq = %s",
            (run_ids, seq),
        ).fetchall()
    assert len(rows) == len(run_ids)
    return {r[0] for r in rows}


def _summaries_agree(store: PostgresStore) -> None:
    """Each run's summary row says what its records say."""
    for summary in store.summaries():
        want = RunSummary.of(RunState.from_records(store.read(summary.id)))
        assert summary.to_record() == want.to_record()


@pytest.fixture
def store(pg_url: str) -> Any:
    s = PostgresStore(pg_url)
    yield s
    s.close()


def test_append_many_writes_every_run_in_one_transaction(store: PostgresStore, pg_url: str) -> None:
    ids = [_new_run(store, n) for n in range(5)]
    writers = []
    for run_id in ids:
        assert store.try_lease(run_id) is not None
        w = store.writer(run_id)
        assert len(w.read_all()) == 2
        writers.append(w)
    out = store.append_many([(w, _frames(records.att(0, 1, 1001.0))) for w in writers])
    assert out == [[] for _ in ids]
    assert len(_xmins(pg_url, ids, 2)) == 1  # one transaction wrote the five runs' records
    for run_id in ids:
        assert store.read(run_id)[-1] == records.att(0, 1, 1001.0)
    _summaries_agree(store)
    # and again: the writers' seq moved with the first batch
    out = store.append_many([(w, _frames(records.done(0, 1, 7, 1002.0))) for w in writers])
    assert out == [[] for _ in ids]
    assert all(len(store.read(r)) == 4 for r in ids)
    _summaries_agree(store)


def test_a_run_appended_to_meanwhile_gets_its_records_after_the_others(
    store: PostgresStore, pg_url: str
) -> None:
    ids = [_new_run(store, n) for n in range(3)]
    writers = []
    for run_id in ids:
        store.try_lease(run_id)
        w = store.writer(run_id)
        w.read_all()
        writers.append(w)
    client = PostgresStore(pg_url)  # another process: a cancel arrives for the middle run
    try:
        client.update(ids[1], lambda existing: [records.cancel(1000.5)])
    finally:
        client.close()
    out = store.append_many([(w, _frames(records.att(0, 1, 1001.0))) for w in writers])
    assert out == [[], [records.cancel(1000.5)], []]
    middle = store.read(ids[1])
    assert [r["t"] for r in middle] == ["run", "sched", "cancel", "att"]
    assert store.summaries()[0].status  # the summary rows still decode
    # the writer knows the run's new length: the next append goes on after it
    assert store.append_many([(writers[1], _frames(records.done(0, 1, 1, 1002.0)))]) == [[]]
    assert [r["t"] for r in store.read(ids[1])] == ["run", "sched", "cancel", "att", "done"]
    _summaries_agree(store)


def test_append_many_reports_a_lost_lease_for_its_run_only(store: PostgresStore) -> None:
    ids = [_new_run(store, n) for n in range(2)]
    writers = []
    for run_id in ids:
        lease = store.try_lease(run_id)
        assert lease is not None
        w = store.writer(run_id)
        w.read_all()
        writers.append((w, lease))
    writers[0][1].release()
    out = store.append_many([(w, _frames(records.att(0, 1, 1001.0))) for w, _ in writers])
    assert isinstance(out[0], LeaseLost)
    assert out[1] == []
    assert len(store.read(ids[0])) == 2
    assert len(store.read(ids[1])) == 3


def test_two_appends_to_one_run_in_a_batch_land_in_order(store: PostgresStore) -> None:
    run_id = _new_run(store, 0)
    store.try_lease(run_id)
    w = store.writer(run_id)
    w.read_all()
    first, second = records.att(0, 1, 1001.0), records.done(0, 1, 5, 1002.0)
    out = store.append_many([(w, _frames(first)), (w, _frames(second)), (w, b"")])
    assert out == [[], [], []]
    assert store.read(run_id)[2:] == [first, second]
    assert w.size() == len(journal.MAGIC) + sum(
        journal.FRAME_OVERHEAD + len(journal.encode(r)) for r in store.read(run_id)
    )


def test_append_many_before_read_all_is_refused(store: PostgresStore) -> None:
    run_id = _new_run(store, 0)
    store.try_lease(run_id)
    out = store.append_many([(store.writer(run_id), _frames(records.att(0, 1, 1.0)))])
    assert isinstance(out[0], RuntimeError)


def test_a_run_another_worker_holds_is_asked_for_again_until_it_is_free(pg_url: str) -> None:
    first, second = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        run_id = _new_run(first, 0)
        lease = first.try_lease(run_id)
        assert lease is not None
        assert second.try_lease(run_id) is None
        assert second.try_lease(run_id) is None  # answered by a look at pg_locks
        assert second.is_leased(run_id)
        lease.release()
        # that look is kept HELD_FRESH s: a run freed meanwhile is taken at the next retry
        assert second.try_lease(run_id) is None
        second._held_at -= HELD_FRESH
        taken = second.try_lease(run_id)
        assert taken is not None
        assert first.try_lease(run_id) is None
        assert second.try_lease(run_id) is None  # session locks nest: one level only
        taken.release()
        assert first.try_lease(run_id) is not None
    finally:
        first.close()
        second.close()


def test_a_note_is_deleted_again_once_this_process_wrote_it_again(store: PostgresStore) -> None:
    notes = store.notes
    notes.put("unloadable", "k", {"reason": "one"})
    notes.delete("unloadable", "k")
    assert notes.get("unloadable", "k") is None
    notes.put("unloadable", "k", {"reason": "two"})
    notes.delete("unloadable", "k")
    assert notes.get("unloadable", "k") is None


def test_a_lease_released_while_the_session_is_busy_is_unlocked_when_it_is_done(
    pg_url: str,
) -> None:
    worker, other = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        run_id = _new_run(worker, 0)
        lease = worker.try_lease(run_id)
        assert lease is not None
        thread, done = busy_session(worker)  # as the I/O thread's group commit holds the session
        lease.release()  # returns at once: the event loop does not wait for the commit
        assert other.try_lease(run_id) is None  # still locked in the database...
        with pytest.raises(LeaseLost):
            worker.writer(run_id)  # ...but this worker no longer writes to the run
        done.set()
        thread.join(30)
        other._held_at -= HELD_FRESH
        assert other.try_lease(run_id) is not None  # unlocked as the session was let go
    finally:
        worker.close()
        other.close()


def test_appends_within_a_quarter_second_update_the_run_row_hot(pg_url: str) -> None:
    """Schema 3: an append's update of the run's summary row changes no indexed column (the
    `changed` quarter second stays as it was), so PostgreSQL writes it as a HOT update (no
    index entries). At most one of the appends crosses into the next quarter second."""
    import psycopg

    store = PostgresStore(pg_url)
    run_id = _new_run(store, 0)
    store.try_lease(run_id)
    w = store.writer(run_id)
    w.read_all()
    for i in range(6):
        assert store.append_many([(w, _frames(records.att(0, i + 1, 1001.0 + i)))]) == [[]]
    store.close()  # its backend exits and flushes its statistics

    def counts() -> tuple[int, int]:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                "WHERE relname = 'wfl_runs' AND schemaname = current_schema()"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    wait_for(lambda: counts()[0] >= 6, 10.0, "the session's statistics")
    updates, hot = counts()
    assert updates == 6
    assert hot >= 5


def test_the_change_feed_gives_runs_written_since_a_mark(store: PostgresStore) -> None:
    first = _new_run(store, 0)
    written, mark = store.changed_since(0)
    assert written == {first}
    second = _new_run(store, 1)  # within the look-back: both come again, the new one too
    written, _ = store.changed_since(mark)
    assert second in written
    import psycopg

    with psycopg.connect(store.url, autocommit=True) as conn:  # as if written long ago
        conn.execute("UPDATE wfl_runs SET changed = changed - 100")
    assert store.changed_since(mark)[0] == set()


def test_schema_2_is_migrated_to_leave_room_for_hot_updates(pg_url: str) -> None:
    import psycopg

    from wfl.stores import pg_schema

    first = PostgresStore(pg_url)
    run_id = _new_run(first, 0)
    first.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as wfl with schema 2 left it
        conn.execute("ALTER TABLE wfl_runs RESET (fillfactor)")
        conn.execute("CREATE SEQUENCE wfl_change_seq")
        conn.execute("UPDATE wfl_meta SET value = '2' WHERE key = 'schema'")
    store = PostgresStore(pg_url)
    assert store.read(run_id)[0]["t"] == "run"
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        version = conn.execute("SELECT value FROM wfl_meta WHERE key = 'schema'").fetchone()
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = 'wfl_runs'::regclass"
        ).fetchone()
    assert version == (str(pg_schema.SCHEMA_VERSION),)
    assert options == (["fillfactor=70"],)


def _rows(url: str, run_id: str) -> list[tuple[int, int]]:
    """(seq, bytes) of each of the run's rows in wfl_records."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return [
            (int(seq), int(n))
            for seq, n in conn.execute(
                "SELECT seq, length(data) FROM wfl_records WHERE run_id = %s ORDER BY seq",
                (run_id,),
            )
        ]


def _size_of(url: str, run_id: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT size FROM wfl_runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    return int(row[0])


def _journal_size(rs: list[Record]) -> int:
    return len(journal.MAGIC) + sum(journal.FRAME_OVERHEAD + len(journal.encode(r)) for r in rs)


def test_an_append_is_one_row_and_a_lease_after_a_read_fetches_only_newer_rows(
    store: PostgresStore, pg_url: str
) -> None:
    """Schema 4: a start's records are one row, each append's another (keyed by the seq of
    its first record); a worker that read the run before another appended to it and let go
    reads on from the rows it has, and the run's size is a journal's."""
    run_id = _new_run(store, 0)
    store.try_lease(run_id)
    w = store.writer(run_id)
    w.read_all()
    step = [records.att(0, 1, 1001.0), records.done(0, 1, 5, 1002.0),
            records.sched(1, "action", "b", {}, 1002.0, 1002.0)]  # fmt: skip
    assert store.append_many([(w, _frames(*step))]) == [[]]
    assert [seq for seq, _ in _rows(pg_url, run_id)] == [0, 2]
    other = PostgresStore(pg_url)  # another worker hears of the run and reads it...
    try:
        assert len(other.read(run_id)) == 5
        more = [records.att(1, 1, 1003.0), records.done(1, 1, 6, 1004.0)]
        assert store.append_many([(w, _frames(*more))]) == [[]]  # ...this one appends...
        store.close()  # ...and lets go
        assert other.try_lease(run_id) is not None
        theirs = other.writer(run_id)
        everything = theirs.read_all()
        assert everything == store.read(run_id)
        assert len(everything) == 7
        assert [seq for seq, _ in _rows(pg_url, run_id)] == [0, 2, 5]
        assert theirs.size() == _size_of(pg_url, run_id) == _journal_size(everything)
    finally:
        other.close()
    _summaries_agree(store)


def test_schema_3_rows_of_one_record_each_read_on_with_rows_of_appends(pg_url: str) -> None:
    """Schema 3 kept a row per record; version 4 reads them as they are (nothing is
    rewritten) and adds a row per append after them."""
    import psycopg

    from wfl.stores import pg_schema

    first = PostgresStore(pg_url)
    run_id = _new_run(first, 0)
    first.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as wfl with schema 3 left it
        conn.execute("DELETE FROM wfl_records WHERE run_id = %s", (run_id,))
        for seq, r in enumerate(_new_records(run_id)):
            conn.execute(
                "INSERT INTO wfl_records VALUES (%s, %s, %s)", (run_id, seq, journal.encode(r))
            )
        conn.execute("COMMENT ON TABLE wfl_records IS NULL")
        conn.execute("UPDATE wfl_meta SET value = '3' WHERE key = 'schema'")
    store = PostgresStore(pg_url)
    try:
        assert store.read(run_id) == _new_records(run_id)
        store.try_lease(run_id)
        w = store.writer(run_id)
        w.read_all()
        step = [records.att(0, 1, 1001.0), records.done(0, 1, 5, 1002.0)]
        assert store.append_many([(w, _frames(*step))]) == [[]]
        assert store.read(run_id) == _new_records(run_id) + step
        assert [seq for seq, _ in _rows(pg_url, run_id)] == [0, 1, 2]
        assert w.size() == _size_of(pg_url, run_id) == _journal_size(store.read(run_id))
        _summaries_agree(store)
    finally:
        store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        version = conn.execute("SELECT value FROM wfl_meta WHERE key = 'schema'").fetchone()
        comment = conn.execute("SELECT obj_description('wfl_records'::regclass)").fetchone()
    assert version == (str(pg_schema.SCHEMA_VERSION),) == ("4",)
    assert comment == (pg_schema.RECORDS,)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("cut", "record 2 does not decode"),  # the row's last record is cut short
        ("gap", "record 4 where record 2 belongs"),  # a row is missing
        ("empty", "the row of record 2 is empty"),
        ("not a record", "record 3 is not a record"),
    ],
)
def test_a_damaged_row_of_records_is_journal_corruption(
    store: PostgresStore, pg_url: str, damage: str, says: str
) -> None:
    import psycopg

    from wfl.errors import JournalCorrupt

    run_id = _new_run(store, 0)
    store.try_lease(run_id)
    w = store.writer(run_id)
    w.read_all()
    step = [records.att(0, 1, 1001.0), records.done(0, 1, 5, 1002.0)]
    assert store.append_many([(w, _frames(*step))]) == [[]]
    assert store.append_many([(w, _frames(records.end("completed", 1003.0, result=5)))]) == [[]]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        if damage == "cut":
            conn.execute(
                "UPDATE wfl_records SET data = substring(data FROM 1 FOR length(data) - 1) "
                "WHERE run_id = %s AND seq = 2",
                (run_id,),
            )
        elif damage == "gap":
            conn.execute("DELETE FROM wfl_records WHERE run_id = %s AND seq = 2", (run_id,))
        else:
            data = b"" if damage == "empty" else journal.encode(step[0]) + journal.encode([1, 2])
            conn.execute(
                "UPDATE wfl_records SET data = %s WHERE run_id = %s AND seq = 2", (data, run_id)
            )
    with pytest.raises(JournalCorrupt, match=says):
        store.read(run_id)
    good, found = store.read_damaged(run_id)
    assert isinstance(found, JournalCorrupt)
    assert good == _new_records(run_id) + (step[:1] if damage == "not a record" else [])


def test_records_of_more_than_a_row_s_bytes_take_several_rows(
    store: PostgresStore, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run created with more records than a row holds (a migrated one), or an append of
    more, is written in several rows (PostgreSQL's limit for one value is 1 GB) and reads
    back the same."""
    from wfl.stores import pg_write

    monkeypatch.setattr(pg_write, "ROW_BYTES", 250)
    big = {"x": "y" * 150}
    run_id = store.create_run(
        lambda run_id: [*_new_records(run_id), records.progress(big, 0, 1000.5)]
    )
    assert [seq for seq, _ in _rows(pg_url, run_id)] == [0, 2]
    store.try_lease(run_id)
    w = store.writer(run_id)
    w.read_all()
    step = [records.att(0, 1, 1001.0), records.done(0, 1, big, 1002.0),
            records.done(0, 1, big, 1002.5)]  # fmt: skip
    small = _new_run(store, 1)
    store.try_lease(small)
    other = store.writer(small)
    other.read_all()
    out = store.append_many([(w, _frames(*step)), (other, _frames(records.att(0, 1, 1001.0)))])
    assert out == [[], []]
    assert [seq for seq, _ in _rows(pg_url, run_id)] == [0, 2, 3, 5]
    assert [seq for seq, _ in _rows(pg_url, small)] == [0, 2]
    everything = store.read(run_id)
    assert everything[3:] == step
    assert w.size() == _size_of(pg_url, run_id) == _journal_size(everything)
    _summaries_agree(store)
