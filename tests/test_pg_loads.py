"""How a PostgreSQL worker loads a run with few round trips: the lease attempt reads the run in
the same round trip (after the lock, so it sees everything its previous holder wrote), an
attempt on a run another worker took is answered without waiting behind this worker's commit
in flight, an attempt on a new run while that commit is in flight is made after it in the lease
thread (lease_soon), and group commits pass their arrays packed by wfl (stores/pg_arrays.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pg_cluster import busy_session

from wfl import records
from wfl.errors import StoreError
from wfl.records import Record
from wfl.stores import pg_arrays, pg_leases
from wfl.stores.base import LeasePending
from wfl.stores.pg_leases import HELD_FRESH, PgLease
from wfl.stores.postgres import PostgresStore
from wfl.worker import Worker


def _make(run_id: str, workflow: str = "w") -> list[Record]:
    return [
        records.run(run_id=run_id, workflow=workflow, flow="/nowhere.py", flow_sha="", args={},
                    created_at=1000.0, version=1, on_complete=None, context=None, parent=None),
        records.sched(0, "action", "a", {}, 1000.0, 1000.0),
    ]  # fmt: skip


@pytest.fixture
def stores(pg_url: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    yield a, b
    a.close()
    b.close()


@contextmanager
def no_reads(store: PostgresStore) -> Iterator[None]:
    """Fail the test if `store` queries its reads connection meanwhile."""

    def refused() -> Any:
        raise AssertionError("a read went to the database")

    store.reads = refused  # type: ignore[method-assign]
    try:
        yield
    finally:
        del store.reads


def test_a_lease_attempt_reads_what_was_appended_after_an_earlier_read(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    worker, client = stores
    run_id = client.create_run(_make)
    assert len(worker.read(run_id)) == 2  # a worker hears of the run and reads it...
    client.update(run_id, lambda existing: [records.cancel(1000.5)])  # ...a cancel comes...
    lease = worker.try_lease(run_id)  # ...then it leases the run
    assert lease is not None
    with no_reads(worker):  # read as the lock was taken, in the same round trip
        history = worker.writer(run_id).read_all()
    assert [r["t"] for r in history] == ["run", "sched", "cancel"]
    lease.release()
    # released: the next load reads afresh
    assert worker.try_lease(run_id) is not None
    assert [r["t"] for r in worker.writer(run_id).read_all()] == ["run", "sched", "cancel"]


def test_a_run_deleted_and_created_anew_is_not_taken_for_the_one_read_before(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    worker, client = stores
    run_id = client.create_run(_make)
    worker.read(run_id)
    client.delete(run_id)
    client.create_run(lambda rid: _make(rid, workflow="other"), run_id=run_id)
    assert worker.try_lease(run_id) is not None
    history = worker.writer(run_id).read_all()
    assert history[0]["workflow"] == "other"


def test_a_lease_attempt_that_fails_keeps_nothing(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    first, second = stores
    run_id = first.create_run(_make)
    assert first.try_lease(run_id) is not None
    assert second.try_lease(run_id) is None
    assert not second._fresh
    first.release(run_id, first.generation)
    first.unlock_released()
    second._held_at -= HELD_FRESH
    lease = second.try_lease(run_id)
    assert lease is not None
    assert len(second.writer(run_id).read_all()) == 2


def test_a_run_another_worker_took_is_answered_while_the_session_is_busy(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    worker, other = stores
    taken = worker.create_run(_make)
    free = worker.create_run(_make)
    assert other.try_lease(taken) is not None
    thread, done = busy_session(worker)  # as the I/O thread's group commit holds the session
    try:
        assert worker.try_lease(taken) is None  # no wait for the session
        assert thread.is_alive()
    finally:
        done.set()
        thread.join(30)
    assert worker.try_lease(free) is not None  # a free one is taken on the session
    assert other.try_lease(free) is None


@pytest.mark.parametrize(
    ("pack", "cast", "values"),
    [
        (pg_arrays.text_array, "text[]", ["a", "", "héllo ✓", "x" * 300]),
        (pg_arrays.int4_array, "int[]", [0, 1, -5, 2**31 - 1]),
        (pg_arrays.int8_array, "bigint[]", [0, 2**40, -(2**63)]),
        (pg_arrays.float8_array, "float8[]", [0.0, 1.5, -1e300]),
        (pg_arrays.float8_array, "float8[]", [None, 2.5, None]),
        (pg_arrays.bytea_array, "bytea[]", [b"", b"\x00\xff", bytes(range(256))]),
        (pg_arrays.text_array, "text[]", []),
        (pg_arrays.float8_array, "float8[]", []),
    ],
)
def test_packed_arrays_arrive_as_psycopg_would_send_them(
    pg_url: str, pack: Any, cast: str, values: list[Any]
) -> None:
    store = PostgresStore(pg_url)
    try:
        with store.session() as conn:
            row = conn.execute(f"SELECT %b::{cast}, %b::{cast} IS NOT DISTINCT FROM %b::{cast}",
                               (pack(values), pack(values), values)).fetchone()  # fmt: skip
        assert row is not None
        assert row[0] == values
        assert row[1] is True
    finally:
        store.close()


def test_lease_attempts_while_the_session_is_busy_go_with_its_next_turn(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    worker, other = stores
    free = [worker.create_run(_make) for _ in range(3)]
    taken = worker.create_run(_make)
    assert other.try_lease(taken) is not None
    outcomes: dict[str, Any] = {}
    came = threading.Event()
    me = threading.get_ident()

    def then(run_id: str) -> Any:
        def tell(outcome: Any) -> None:
            assert threading.get_ident() != me  # from the lease thread, not the caller's
            outcomes[run_id] = outcome
            if len(outcomes) == 4:
                came.set()

        return tell

    thread, done = busy_session(worker)
    try:
        for run_id in [*free, taken]:  # no wait for the session: each answer comes later
            assert isinstance(worker.lease_soon(run_id, then(run_id)), LeasePending)
        assert isinstance(worker.lease_soon(free[0], then("again")), LeasePending)  # queued
        assert not outcomes
    finally:
        done.set()
        thread.join(30)
    assert came.wait(30)
    assert outcomes[taken] is None
    assert "again" not in outcomes  # one attempt per run, answered once
    for run_id in free:
        assert isinstance(outcomes[run_id], PgLease)
        assert other.try_lease(run_id) is None  # the lease is real: held by worker's session
        with no_reads(worker):  # read as the lock was taken, in the same round trip
            assert len(worker.writer(run_id).read_all()) == 2
    # the session is free now: an attempt is made at once
    outcomes.clear()
    assert worker.lease_soon(taken, then(taken)) is None
    other.release(taken, other.generation)
    other.unlock_released()
    worker._held_at -= HELD_FRESH
    assert isinstance(worker.lease_soon(taken, then(taken)), PgLease)
    assert not outcomes


def test_a_lease_nobody_can_take_any_more_is_let_go(
    stores: tuple[PostgresStore, PostgresStore],
) -> None:
    worker, other = stores
    run_id = worker.create_run(_make)
    failed = threading.Event()

    def then(outcome: Any) -> None:  # as call_soon_threadsafe on a closed loop
        failed.set()
        raise RuntimeError("Event loop is closed")

    thread, done = busy_session(worker)
    try:
        assert isinstance(worker.lease_soon(run_id, then), LeasePending)
    finally:
        done.set()
        thread.join(30)
    assert failed.wait(30)
    assert worker._attempts == {}
    worker.unlock_released()
    assert other.try_lease(run_id) is not None  # released: not held by a worker gone


def test_a_failed_lease_attempt_tells_its_caller_and_keeps_nothing(
    stores: tuple[PostgresStore, PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, other = stores
    run_id = worker.create_run(_make)
    told: list[Any] = []
    came = threading.Event()

    def broken(*args: Any) -> Any:
        raise StoreError("the statement failed")

    monkeypatch.setattr(pg_leases, "lock_and_read_many", broken)
    thread, done = busy_session(worker)
    try:
        assert isinstance(worker.lease_soon(run_id, lambda o: (told.append(o), came.set())),
                          LeasePending)  # fmt: skip
    finally:
        done.set()
        thread.join(30)
    assert came.wait(30)
    monkeypatch.undo()
    assert isinstance(told[0], StoreError)
    assert run_id not in worker._leases
    assert other.try_lease(run_id) is not None


def test_a_worker_lets_go_of_a_lease_that_comes_when_it_no_longer_wants_it(
    pg_url: str,
) -> None:
    store = PostgresStore(pg_url)
    other = PostgresStore(pg_url)
    try:
        run_id = store.create_run(_make)
        worker = Worker(store, listen=False)
        lease = store.try_lease(run_id)
        assert lease is not None
        worker.draining = True  # stopping meanwhile
        worker._leased_later(run_id, lease)
        assert run_id not in worker.drivers
        store.unlock_released()
        assert other.try_lease(run_id) is not None
    finally:
        store.close()
        other.close()
