"""PostgreSQL store with real worker processes (SPEC §7): a SIGKILLed worker's runs are
finished by the others with every execution matching a recorded attempt; a worker whose
database stops drives nothing, logs one line per retry and resumes when it is back; the
schema carries a version; listing reads no records. Flows: tests/crash_flows/chaos.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from crash_flows import chaos
from crash_flows.harness import (
    CHAOS,
    WorkerProc,
    account,
    line_count,
    settled,
    wait_for,
    worker_listening,
)
from pg_cluster import Cluster

from wfl import Client
from wfl.stores.pg_leases import lock_key
from wfl.stores.postgres import PostgresStore


def _leases_by_process(url: str, run_ids: list[str]) -> dict[int, set[str]]:
    """OS pid of each worker -> the runs whose advisory lock its session holds."""
    import psycopg

    by_key = {lock_key(r) & 0xFFFFFFFFFFFFFFFF: r for r in run_ids}
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.application_name, l.classid::bigint, l.objid::bigint FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        ).fetchall()
    held: dict[int, set[str]] = {}
    for app, hi, lo in rows:
        run_id = by_key.get((hi << 32) | lo)
        if run_id is not None and app.startswith("wfl "):
            held.setdefault(int(app.split()[1]), set()).add(run_id)
    return held


@pytest.mark.slow
def test_a_sigkilled_worker_on_postgresql_leaves_its_runs_to_two_others(
    pg_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    workers = [WorkerProc(pg_url, out_dir=tmp_path) for _ in range(3)]
    try:
        wait_for(worker_listening(pg_url, 3), 20.0, "three workers to listen")
        client = Client(store=pg_url)
        run_ids = [
            client.start(f"{CHAOS}:five", {"log": str(log), "retry": True}) for _ in range(30)
        ]
        wait_for(lambda: line_count(log) >= 20, 30.0, "some progress")
        victim, held = workers[0], set()

        def someone_drives() -> bool:  # a worker caught holding unfinished runs, mid-step
            nonlocal victim, held
            leases = _leases_by_process(pg_url, run_ids)
            for w in workers:
                held = {r for r in leases.get(w.pid, set()) if not settled(pg_url, r)}
                if held:
                    victim = w
                    return True
            return False

        wait_for(someone_drives, 30.0, "a worker to hold a lease", every=0.001)
        victim.kill()
        orphans = {r for r in held if not settled(pg_url, r)}
        wait_for(lambda: all(settled(pg_url, r) for r in run_ids), 60.0, "every run to end")
    finally:
        for w in workers:
            w.kill()
    for r in run_ids:
        assert client.wait(r, timeout=1) == chaos.FIVE_EXPECTED
    acc = account(pg_url, log, run_ids)
    assert not acc.problems, "\n".join(acc.problems)
    assert acc.duplicates == 0
    assert orphans, "the victim held no unfinished run when killed: nothing was proven"
    print(
        f"\nPostgreSQL: killed 1 of 3 workers holding {len(orphans)} unfinished runs, all "
        f"finished by the others; {acc.summary()}"
    )


@pytest.fixture
def own_cluster(pg_cluster: Cluster) -> object:
    """A cluster of its own (this test stops and starts it)."""
    cluster = Cluster(pg_cluster.bindir)
    cluster.init()
    yield cluster
    cluster.destroy()


@pytest.mark.slow
def test_stopping_postgresql_under_a_worker_loses_nothing_and_it_resumes(
    own_cluster: Cluster, tmp_path: Path
) -> None:
    url = own_cluster.url()
    log = tmp_path / "effects.log"
    client = Client(store=url)
    run_ids = [client.start(f"{CHAOS}:five", {"log": str(log), "retry": True}) for _ in range(12)]
    worker = WorkerProc(url, out_dir=tmp_path)
    try:
        wait_for(lambda: line_count(log) >= 8, 30.0, "some progress")
        own_cluster.stop("fast")
        client.store.close()
        wait_for(lambda: worker.output().count("retrying in") >= 3, 30.0, "three retries")
        down_at = line_count(log)
        time.sleep(0.5)  # a window with the database down: the worker must start nothing
        assert line_count(log) == down_at
        own_cluster.start()
        wait_for(lambda: "is back" in worker.output(), 30.0, "the worker to reconnect")
        wait_for(lambda: all(settled(url, r) for r in run_ids), 60.0, "every run to end")
    finally:
        worker.kill()
    out = worker.output()
    retry_lines = [line for line in out.splitlines() if "unavailable" in line]
    assert len(retry_lines) >= 3
    assert all("retrying in" in line for line in retry_lines)
    outage = out[out.index("unavailable") : out.index("is back")]
    assert "step_started" not in outage, "the worker started a step while disconnected"
    for r in run_ids:
        assert client.wait(r, timeout=1) == chaos.FIVE_EXPECTED
    acc = account(url, log, run_ids)
    assert not acc.problems, "\n".join(acc.problems)
    assert acc.duplicates == 0
    print(f"\nPostgreSQL stopped and started under a worker: {acc.summary()}")


def test_a_newer_schema_is_refused_with_one_line(pg_url: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    Client(store=pg_url).list()  # creates the schema
    store = PostgresStore(pg_url)
    with store.session() as conn:
        conn.execute("UPDATE wfl_meta SET value = '99' WHERE key = 'schema'")
    store.close()
    wfl = str(Path(sys.executable).parent / "wfl")
    env = {k: v for k, v in os.environ.items() if k not in ("WFL_DIR", "WFL_STORE")}
    done = subprocess.run([wfl, "status", "--store", pg_url], capture_output=True, text=True,
                          env=env, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "schema version 99, newer than this wfl knows (4): upgrade wfl" in done.stderr


def test_listing_reads_summaries_not_records(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client(store=pg_url)
    ids = {client.start(f"{CHAOS}:five", {"log": "/dev/null"}) for _ in range(5)}

    def no_records(*args: object) -> None:
        raise AssertionError("listing read a run's records")

    monkeypatch.setattr(PostgresStore, "_decode", no_records)
    listed = client.list()
    assert {r.id for r in listed} == ids
    assert {r.state for r in listed} == {"in_progress"}
    assert [r.id for r in client.list(limit=2)] == [r.id for r in listed[:2]]


def test_leases_exclude_other_sessions_and_die_with_them(pg_url: str) -> None:
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    run_id = Client(store=a).start(f"{CHAOS}:five", {"log": "/dev/null"})
    lease = a.try_lease(run_id)
    assert lease is not None
    assert b.try_lease(run_id) is None
    assert b.is_leased(run_id)
    with a.session() as conn:  # the session dies as a killed worker's would
        os.kill(conn.info.backend_pid, signal.SIGTERM)
    wait_for(lambda: not b.is_leased(run_id), 10.0, "the lease to end with its session")
    assert b.try_lease(run_id) is not None
    a.close()
    b.close()


def test_an_older_schema_is_migrated_on_first_use(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wfl.stores import pg_schema

    client = Client(store=pg_url)
    run_id = client.start(f"{CHAOS}:five", {"log": "/dev/null"})
    client.store.close()
    store = PostgresStore(pg_url)
    with store.session() as conn:  # as an older wfl (schema 0, without wfl_probe) left it
        conn.execute("UPDATE wfl_meta SET value = '0' WHERE key = 'schema'")
    store.close()
    monkeypatch.setitem(pg_schema.MIGRATIONS, 0, "CREATE TABLE wfl_probe (x int)")
    migrated = PostgresStore(pg_url)
    assert migrated.read(run_id)[0]["t"] == "run"
    with migrated.session() as conn:
        version = conn.execute("SELECT value FROM wfl_meta WHERE key = 'schema'").fetchone()
        probe = conn.execute("SELECT to_regclass('wfl_probe') IS NOT NULL").fetchone()
    assert version == (str(pg_schema.SCHEMA_VERSION),)
    assert probe == (True,)
    migrated.close()


def test_watchers_see_runs_created_appended_to_and_deleted(pg_url: str) -> None:
    import asyncio

    client = Client(store=pg_url)
    store = client.store

    def start() -> str:
        return client.start(f"{CHAOS}:five", {"log": "/dev/null"})

    async def watch() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        feed = store.changes(stop=stop).__aiter__()  # type: ignore[attr-defined]
        first = asyncio.ensure_future(feed.__anext__())
        created: set[str] = set()
        while not first.done():  # runs started until the feed (set up meanwhile) sees one
            created.add(await loop.run_in_executor(None, start))
            await asyncio.wait({first}, timeout=0.1)
        assert first.result() <= created
        assert first.result()

        async def until_seen(run_id: str) -> None:
            while run_id not in await asyncio.wait_for(feed.__anext__(), 10):
                pass

        run_id = sorted(created)[0]
        await loop.run_in_executor(None, client.cancel, run_id)  # an append
        await until_seen(run_id)
        await loop.run_in_executor(None, store.delete, run_id)
        await until_seen(run_id)
        stop.set()

    asyncio.run(watch())
    store.close()
