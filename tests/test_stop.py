"""A stopping worker (SIGTERM, Ctrl-C: Worker.stop) never waits on itself: `kill <pid>` ends
it within its grace period, whatever its group commits are doing at that moment.

These tests build the interleavings a race needs through seams (a group's sync held by the
test, the moment the shutdown begins to wait for a run's records) rather than hoping for them;
the worker runs in a thread of its own, so a worker that hangs fails the test instead of
stalling it. tests/test_crash.py SIGTERMs real `wfl worker` processes at random moments.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import flows
import pytest
from crash_flows.harness import state_of

from wfl import Client, journal, records
from wfl.replay import RunDriver
from wfl.stores import open_store
from wfl.worker import Worker

FLOWS = str(Path(flows.__file__))
HANG = 10.0  # seconds: a worker not done by then is taken to wait forever


@pytest.fixture
def held_syncs(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Group commits sync in threads (not Linux AIO), each waiting until the returned event
    is set: a group stays in flight, holding its journals' locks, until the test lets it go."""
    monkeypatch.setenv("WFL_AIO", "0")
    gate = threading.Event()
    gate.set()
    real = journal.sync_journals

    def sync_journals(fds: Sequence[int]) -> dict[int, str]:
        assert gate.wait(HANG), "the test never let the group's sync go"
        return real(fds)

    monkeypatch.setattr(journal, "sync_journals", sync_journals)
    return gate


def in_thread(main: Callable[[], Coroutine[Any, Any, None]]) -> threading.Thread:
    """Run `main` on an event loop of its own in a daemon thread (a hung loop stays there)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # (reported by the test's assertion below)
            errors.append(exc)

    thread = threading.Thread(target=target, name="test-worker", daemon=True)
    thread.start()
    thread.join(HANG)
    assert not errors, errors
    return thread


def stack_of(thread: threading.Thread) -> str:
    """Where a (hung) thread is now."""
    frame = sys._current_frames().get(thread.ident or 0)
    return "".join(traceback.format_stack(frame)) if frame is not None else "(gone)"


async def until(cond: Callable[[], bool], what: str) -> None:
    """Let the worker's loop turn until `cond` holds (bounded)."""
    deadline = time.monotonic() + HANG
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def idle(d: RunDriver) -> bool:
    return not d.buffer and d.flushing is None and (d.quiet_until() or 0.0) > time.time()


def test_stop_while_a_run_buffers_more_during_its_last_group_commit(
    tmp_path: Path, held_syncs: threading.Event
) -> None:
    """The shutdown waits for a run's last group commit; meanwhile the run buffers records
    someone waits for (its end, say), so the committer starts their group as the first one
    lands, a turn before the shutdown looks again. The worker must let that group land too
    before it closes the run's journal: closing it under the group waited, on the loop, for
    the journal's lock that only the loop releases (a worker that never exited)."""
    directory = tmp_path / "runs"
    client = Client(directory)
    runs = [client.start(f"{FLOWS}:long_sleep", {"days": 0.01}) for _ in range(2)]
    # two runs held live, asleep (with one, its groups would be synced on the loop at once)
    worker = Worker(directory, listen=False, evict_after=3600.0)
    shutdown_waits: list[str] = []
    d_id: list[str] = []

    async def main() -> None:
        serving = asyncio.create_task(worker.run())
        await until(lambda: len(worker.drivers) == 2, "two live runs")
        await until(lambda: all(idle(d) for d in worker.drivers.values()), "two idle runs")
        d = next(iter(worker.drivers.values()))  # the one the shutdown looks at first
        d_id.append(d.run_id)
        held_syncs.clear()
        d._append(records.progress("before the stop", 0, time.time()))
        worker.commit(d, urgent=True)
        await until(lambda: d.flushing is not None, "the run's group commit to begin")
        real_flush = d.flush

        def more() -> None:  # the run buffers more while the shutdown waits for its group
            d._append(records.progress("during the stop", 0, time.time()))
            worker.commit(d, urgent=True)
            held_syncs.set()

        async def flush(**kwargs: Any) -> None:
            shutdown_waits.append(d.run_id)
            if len(shutdown_waits) == 1:
                asyncio.get_running_loop().call_soon(more)
            await real_flush(**kwargs)

        d.flush = flush  # type: ignore[method-assign]
        worker.stop()
        await serving

    thread = in_thread(main)
    assert not thread.is_alive(), f"the stopped worker never finished:\n{stack_of(thread)}"
    assert shutdown_waits, "the shutdown never waited for the run's group commit"
    assert not worker.drivers
    # every record the run buffered is durable, and the runs' leases were let go
    assert state_of(directory, d_id[0]).progress == "during the stop"
    store = open_store(directory)
    for run_id in runs:
        lease = store.try_lease(run_id)
        assert lease is not None, f"run {run_id} is still leased by the stopped worker"
        lease.release()


def test_a_run_evicted_while_its_group_commit_is_in_flight(
    tmp_path: Path, held_syncs: threading.Event
) -> None:
    """Whatever drops a live run (a stop, a lease or store lost, idleness) while a group
    commit holds its journal: the loop goes on at once, and the run's journal is closed and
    its lease let go when that group has landed, not before (the group holds the lock)."""
    directory = tmp_path / "runs"
    client = Client(directory)
    for _ in range(2):
        client.start(f"{FLOWS}:long_sleep", {"days": 0.01})
    worker = Worker(directory, listen=False, evict_after=3600.0)
    store = open_store(directory)
    evicted: list[str] = []

    def free(run_id: str) -> bool:
        lease = store.try_lease(run_id)
        if lease is not None:
            lease.release()
        return lease is not None

    async def main() -> None:
        serving = asyncio.create_task(worker.run())
        await until(lambda: len(worker.drivers) == 2, "two live runs")
        await until(lambda: all(idle(d) for d in worker.drivers.values()), "two idle runs")
        d = next(iter(worker.drivers.values()))
        held_syncs.clear()
        d._append(records.progress("in flight", 0, time.time()))
        worker.commit(d, urgent=True)
        await until(lambda: d.flushing is not None, "the run's group commit to begin")
        d.evict()
        evicted.append(d.run_id)
        assert not free(d.run_id), "the run's lease was let go before its group landed"
        held_syncs.set()
        await until(lambda: free(d.run_id), "the run's lease to be let go")
        worker.stop()
        await serving

    thread = in_thread(main)
    assert not thread.is_alive(), f"the worker never finished:\n{stack_of(thread)}"
    assert state_of(directory, evicted[0]).progress == "in flight"
