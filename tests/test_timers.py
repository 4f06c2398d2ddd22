"""Timers on time (issue 16): work done ahead of a due time, and the step started at it.

Everything here runs on a FakeClock, whose reads tell exactly when (in fake time) a record was
written, an event was announced, or a step body ran.
"""

from __future__ import annotations

import asyncio
from typing import Any

import flows
import pytest

from wfl import Client
from wfl import clock as clock_module
from wfl.clock import SystemClock
from wfl.testing import WorkflowTestEnv
from wfl.worker import Worker


@pytest.fixture
def env() -> Any:
    with WorkflowTestEnv() as e:
        flows.knobs["clock"] = e.clock
        yield e


def records(env: WorkflowTestEnv, run_id: str, t: str) -> list[dict[str, Any]]:
    return [r for r in env.client.store.read(run_id) if r["t"] == t]


def drive(env: WorkflowTestEnv, worker: Worker) -> None:
    """Run `worker` until no timer is left, the fake clock jumping to each in turn."""
    env.clock.skip = True
    try:
        asyncio.run(worker.run(stop_when_idle=True))
    finally:
        env.clock.skip = False


def test_an_attempt_is_recorded_ahead_of_its_due_time_and_its_body_starts_at_it(
    env: WorkflowTestEnv,
) -> None:
    run_id = env.start(flows.timed_action, {"delay": 60.0})
    worker = Worker(env.dir, clock=env.clock, listen=False)
    announced: list[tuple[float, float, bool]] = []

    def on_event(e: Any) -> None:
        if e.kind == "step_started":
            durable = bool(records(env, run_id, "att"))  # read back from disk
            announced.append((env.clock.now(), e.at, durable))

    worker.on_event = on_event
    drive(env, worker)
    assert env.result(run_id) == "timed"
    due = records(env, run_id, "sched")[0]["run_at"]
    # announced (and durable) while the clock read due - arm_ahead, dated at the due time
    assert announced == [(pytest.approx(due - worker.arm_ahead), due, True)]
    assert records(env, run_id, "att")[0]["at"] == due
    assert flows.times == [("timed", due)]  # the body ran at its due time, not before


def test_an_evicted_run_is_loaded_ahead_of_its_timer_and_its_step_starts_at_its_due_time(
    env: WorkflowTestEnv,
) -> None:
    run_id = env.start(flows.timed_action, {"delay": 3600.0})
    worker = Worker(env.dir, clock=env.clock, listen=False, evict_after=60.0)
    events: list[tuple[str, float]] = []
    worker.on_event = lambda e: events.append((e.kind, env.clock.now()))
    drive(env, worker)
    assert env.result(run_id) == "timed"
    due = records(env, run_id, "sched")[0]["run_at"]
    kinds = [k for k, _ in events]
    assert kinds[:4] == ["loaded", "evicted", "loaded", "step_started"]
    loads = [t for k, t in events if k == "loaded"]
    assert loads[1] == pytest.approx(due - worker.load_ahead)  # replayed ahead of time
    assert flows.times == [("timed", due)]


def test_a_sleep_wakes_ahead_but_the_run_lives_at_its_end(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.sleep_then_step, {"delay": 60.0})
    worker = Worker(env.dir, clock=env.clock, listen=False)
    started: list[float] = []
    worker.on_event = lambda e: started.append(env.clock.now()) if e.kind == "step_started" else 0
    drive(env, worker)
    end_of_sleep = records(env, run_id, "sched")[0]["run_at"]
    after, key = env.result(run_id)
    assert key == "after"
    # the workflow code went on early, but what it saw and scheduled is dated from the end
    assert after == end_of_sleep  # step.now() right after the sleep
    sleep_done, _, _step_done = records(env, run_id, "done")
    assert sleep_done["at"] == end_of_sleep
    next_step = records(env, run_id, "sched")[2]
    assert next_step["run_at"] == end_of_sleep
    # the step after it was recorded while the clock read arm_ahead before the sleep's end
    assert started == [pytest.approx(end_of_sleep - worker.arm_ahead)]
    assert flows.times == [("after", end_of_sleep)]
    assert records(env, run_id, "end")[0]["at"] >= end_of_sleep


def test_a_run_that_ends_after_a_sleep_woken_ahead_ends_after_the_sleep(
    env: WorkflowTestEnv,
) -> None:
    run_id = env.start(flows.long_sleep, {"days": 1.0})
    ends: list[float] = []
    worker = Worker(env.dir, clock=env.clock, listen=False)
    worker.on_event = lambda e: ends.append(env.clock.now()) if e.kind == "run_finished" else None
    drive(env, worker)
    assert env.result(run_id) == "woke"
    end_of_sleep = records(env, run_id, "sched")[0]["run_at"]
    assert ends == [end_of_sleep]  # not arm_ahead earlier, though the code ran then
    assert records(env, run_id, "end")[0]["at"] == end_of_sleep


def test_once_works_nothing_ahead(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.timed_action, {"delay": 60.0})
    env.advance(0)  # the step is scheduled 60 s from now
    env.advance(60.0 - 0.001)  # within arm_ahead and load_ahead of its due time
    assert records(env, run_id, "att") == []
    assert flows.times == []
    env.advance(0.001)
    assert env.result(run_id) == "timed"


def test_a_stopping_worker_still_runs_an_attempt_recorded_ahead(env: WorkflowTestEnv) -> None:
    # a real clock: the attempt is armed for a moment, and the worker is told to stop then
    flows.knobs["clock"] = SystemClock()
    run_id = Client(env.dir).start(flows.timed_action, {"delay": 0.2})
    worker = Worker(env.dir, listen=False, grace=30.0)
    worker.on_event = lambda e: worker.stop() if e.kind == "step_started" else None
    asyncio.run(worker.run())
    assert not worker.cut_off
    (att,) = records(env, run_id, "att")
    (done,) = [r for r in records(env, run_id, "done") if r["n"] == 0]
    assert flows.times
    assert flows.times[0][1] >= att["at"]
    assert done["attempt"] == 1


class FrozenTime:
    """Stands in for the `time` module in wfl/clock.py: a time that does not move, sleeps that
    are only noted."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_an_idle_wait_ends_with_a_fine_sleep_of_the_last_stretch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncio rounds its waits up to whole milliseconds: an idle worker waits through it only
    until FINE_WAIT before the deadline, and sleeps the rest."""
    frozen = FrozenTime(1_790_000_000.0)
    monkeypatch.setattr(clock_module, "time", frozen)
    clock = SystemClock()
    until = frozen.now + clock_module.FINE_WAIT / 2

    async def wait(*, idle: bool) -> None:
        await clock.wait(until, asyncio.Event(), idle=idle)

    asyncio.run(wait(idle=True))
    assert frozen.slept == [until - frozen.now]
    frozen.slept.clear()
    asyncio.run(wait(idle=False))  # asyncio's own wait, then back: no blocking sleep
    assert frozen.slept == []  # a busy worker never blocks its loop


def test_an_event_wakes_an_idle_wait_without_the_fine_sleep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen = FrozenTime(1_790_000_000.0)
    monkeypatch.setattr(clock_module, "time", frozen)
    clock = SystemClock()

    async def main() -> None:
        wakeup = asyncio.Event()
        wakeup.set()
        await clock.wait(frozen.now + 3600, wakeup, idle=True)

    asyncio.run(main())
    assert frozen.slept == []


def test_news_of_a_due_run_loads_it_in_the_same_turn_not_through_the_timer_heap(
    env: WorkflowTestEnv,
) -> None:
    """Start to first step (issue 16): the callback that brings a new run's news (the wake-up
    datagram's) leases, replays and starts the run itself, with no turn through the heap."""
    worker = Worker(env.dir, clock=env.clock, listen=False)
    seen: dict[str, Any] = {}

    async def main() -> None:
        task = asyncio.create_task(worker.run(until=lambda: "run" in seen))
        await asyncio.sleep(0)  # the worker has scanned (nothing) and waits
        run_id = env.client.start(flows.timed_action, {"delay": 0.0})
        worker._news(run_id)  # what the datagram's reader calls
        seen["live"] = run_id in worker.drivers
        seen["timers"] = [t for _, _, t in worker._heap if not t.canceled]
        seen["run"] = run_id
        await task

    asyncio.run(main())
    assert seen["live"] is True
    assert seen["timers"] == []  # nothing left to fire for it
    assert env.result(seen["run"]) == "timed"
    assert flows.times == [("timed", env.clock.now())]  # and the fake clock never moved


def test_a_rescan_reads_the_versions_off_the_loop_which_serves_runs_meanwhile(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 journals' stats take ~100 ms: a rescan (the safety net, every RESCAN_EVERY s)
    must not hold up a run that is due meanwhile (issue 16)."""
    import threading

    from wfl.worker import RESCAN_EVERY

    worker = Worker(env.dir, clock=env.clock)  # listening: it rescans
    real = worker.store.versions
    entered, gate = threading.Event(), threading.Event()
    on_loop: list[bool] = []

    def slow_versions() -> dict[str, object]:
        on_loop.append(threading.current_thread() is threading.main_thread())
        if len(on_loop) > 1:  # not the scan at start-up: the rescan
            entered.set()
            gate.wait(30)
        return real()

    monkeypatch.setattr(worker.store, "versions", slow_versions)
    seen: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        finished = asyncio.Event()
        worker.on_event = lambda e: finished.set() if e.kind == "run_finished" else None
        task = asyncio.create_task(worker.run(until=lambda: "run" in seen))
        await asyncio.sleep(0)
        env.clock.advance(RESCAN_EVERY + 1)
        worker.activity()
        assert await loop.run_in_executor(None, entered.wait, 30)  # the rescan is reading
        run_id = env.client.start(flows.timed_action, {"delay": 0.0})
        worker._news(run_id)
        await asyncio.wait_for(finished.wait(), 30)  # driven to its end meanwhile
        seen["still reading"] = not gate.is_set()
        gate.set()
        seen["run"] = run_id
        await task

    try:
        asyncio.run(main())
    finally:
        gate.set()
    assert on_loop == [True, False]  # the scan at start-up on the loop, the rescan off it
    assert seen["still reading"]
    assert env.result(seen["run"]) == "timed"


def test_an_evicted_run_leaves_nothing_of_its_driver_behind(env: WorkflowTestEnv) -> None:
    """Its canceled timers stay in the heap until their time (a month, for a sleep): they must
    not hold the driver (10,000 sleeping runs kept ~90 MB of drivers alive through them)."""
    import gc
    import weakref

    run_id = env.start(flows.long_sleep, {"days": 30.0})
    worker = Worker(env.dir, clock=env.clock, listen=False, evict_after=60.0)
    drivers: list[weakref.ref[Any]] = []
    evicted: list[str] = []

    def on_event(e: Any) -> None:
        if e.kind == "loaded":
            drivers.append(weakref.ref(worker.drivers[e.run_id]))
        elif e.kind == "evicted":
            evicted.append(e.run_id)

    worker.on_event = on_event
    asyncio.run(worker.run(until=lambda: bool(evicted)))
    assert evicted == [run_id]
    assert any(not t.canceled for _, _, t in worker._heap)  # its wake-up, a month ahead
    gc.collect()
    assert [d() for d in drivers] == [None]


@pytest.mark.slow
def test_a_worker_killed_while_an_attempt_waits_for_its_time_never_runs_it(tmp_path: Any) -> None:
    """The trade-off of recording attempts ahead (README, Performance): SIGKILL between an
    attempt's durable record and its due time. Its body never ran, and a replay cannot tell
    that from a body cut short, so a non-retried action fails "Interrupted": at most once per
    recorded attempt (SPEC §1), never twice. The worker here arms 29.5 s ahead instead of
    ARM_AHEAD, so that the kill lands in the window without a race."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from crash_flows.harness import wait_for, wfl_command

    from wfl import journal
    from wfl.state import RunState

    flow = Path(__file__).resolve().parent / "crash_flows" / "armed.py"
    runs, mark = tmp_path / "runs", tmp_path / "mark"
    run_id = Client(runs).start(f"{flow}:armed", {"path": str(mark), "delay": 30.0})
    path = runs / f"{run_id}.journal"
    script = (  # (not evicted meanwhile: it would be loaded again only 0.1 s before its time)
        "import sys, wfl.worker as w; w.ARM_AHEAD = 29.5; "
        "w.Worker(sys.argv[1], evict_after=3600).run_sync()"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(runs)], cwd=tmp_path)
    try:
        wait_for(lambda: any(r["t"] == "att" for r in journal.read(path).records), 60, "arming")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    (att,) = [r for r in journal.read(path).records if r["t"] == "att"]
    assert time.time() < att["at"] - 20  # killed well before the attempt's time: never started
    done = subprocess.run([*wfl_command(), "worker", "--once", "--dir", str(runs)], timeout=60)
    assert done.returncode == 0
    assert not mark.exists()
    state = RunState.from_records(journal.read(path).records)
    assert state.end is not None
    assert state.end["kind"] == "failed"
    assert state.steps[0].attempts == 1
    assert "Interrupted" in str(state.end["error"])


def test_news_loads_a_process_own_share_at_once_and_a_siblings_run_only_after_its_delay(
    env: WorkflowTestEnv,
) -> None:
    """`wfl worker --processes N` (wfl/share.py): loading a due run straight from its news must
    not skip the delay before a sibling's run is taken."""
    from wfl.share import SHARE_DELAY, ShareWorker, share_of

    worker = ShareWorker(env.dir, index=0, count=2, clock=env.clock, listen=False)
    ids: list[str] = []
    seen: dict[str, tuple[bool, float | None]] = {}

    async def main() -> None:
        task = asyncio.create_task(worker.run(until=lambda: len(seen) == 12))
        await asyncio.sleep(0)  # the worker has scanned (nothing) and waits
        for _ in range(12):
            run_id = env.client.start(flows.timed_action, {"delay": 0.0})
            ids.append(run_id)
            worker._news(run_id)
            timer = worker._waking.get(run_id)
            seen[run_id] = (run_id in worker.drivers, timer.when if timer else None)
        worker.stop()
        await task

    asyncio.run(main())
    assert {share_of(r, 2) for r in ids} == {0, 1}
    for run_id, (live, when) in seen.items():
        if share_of(run_id, 2) == 0:
            assert live
        else:
            assert not live
            assert when is not None
            assert when >= env.clock.now() + SHARE_DELAY
