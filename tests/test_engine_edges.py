"""Engine edge cases found in review (issue 14), each reproduced here before it was fixed."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import edge_flows
import flows
import pytest

from wfl import WorkflowFailed, journal, ops, records
from wfl.errors import RunNotFound
from wfl.state import RunState
from wfl.testing import WorkflowTestEnv
from wfl.worker import Worker


@pytest.fixture
def env() -> Iterator[WorkflowTestEnv]:
    with WorkflowTestEnv() as e:
        yield e


def failed_error(env: WorkflowTestEnv, run_id: str) -> str:
    with pytest.raises(WorkflowFailed) as info:
        env.result(run_id)
    return info.value.error


# -- a step's own TimeoutError is an ordinary failure ---------------------------------------


def test_step_raising_timeout_error_without_timeout_fails_once(env: WorkflowTestEnv) -> None:
    run_id = env.start(edge_flows.own_timeout, {"key": "t"})
    env.run_until_idle()
    assert "TimeoutError: upstream did not answer" in failed_error(env, run_id)
    assert flows.calls["t"] == 1


def test_step_raising_timeout_error_is_not_reported_as_its_timeout(
    env: WorkflowTestEnv,
) -> None:
    run_id = env.start(edge_flows.own_timeout, {"key": "t", "timeout": 30.0})
    env.run_until_idle()
    error = failed_error(env, run_id)
    assert "TimeoutError: upstream did not answer" in error
    assert "longer than" not in error
    assert flows.calls["t"] == 1


# -- delays that never come due are refused where they are asked for ----------------------


@pytest.mark.parametrize("how", ["sleep", "run_after", "run_at", "timeout", "event"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "huge"])
def test_delay_that_is_not_a_real_time_fails_the_call(
    env: WorkflowTestEnv, how: str, value: str
) -> None:
    run_id = env.start(edge_flows.odd_delay, {"how": how, "value": value})
    env.run_until_idle()
    error = failed_error(env, run_id)
    assert "ValueError" in error, error
    assert flows.calls["odd"] == 0
    status = env.client.status(run_id)  # readable: no datetime overflow anywhere
    assert status.to_dict()["state"] == "failed"


def test_status_of_a_journal_holding_an_impossible_wake_time_is_readable(
    env: WorkflowTestEnv,
) -> None:
    """Older wfl accepted such delays; their journals must still show."""
    run_id = env.start(flows.one_action)
    at = env.now()
    path = env.client.store.journal_path(run_id)
    for n, run_at in enumerate([1e12, math.inf, math.nan]):
        sched = records.sched(n, "sleep", "sleep", {}, run_at, at)
        journal.update(path, lambda _existing, r=sched: [r])
    st = env.client.status(run_id).to_dict()
    assert [s["run_at"] for s in st["steps"]] == [None, None, None]


# -- cancel and restart ---------------------------------------------------------------------


async def poll_until(cond: Callable[[], bool], what: str, *, within: float = 20.0) -> None:
    """Let the worker's loop (and its step threads) run until `cond()` holds."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.002)


def in_worker(
    env: WorkflowTestEnv, run_id: str, scenario: Any, worker: Worker | None = None
) -> None:
    """Drive `run_id` with an in-process worker while `scenario(worker)` acts on it."""

    async def main() -> None:
        w = worker or Worker(env.client.store, clock=env.clock, listen=False)
        done = asyncio.create_task(w.run(until=lambda: env.client.status(run_id).finished))
        await scenario(w)
        await asyncio.wait_for(done, 30)

    asyncio.run(main())


def cancel_now(env: WorkflowTestEnv, worker: Worker, run_id: str) -> None:
    """`wfl cancel`, and its wake-up datagram arriving."""
    ops.cancel(env.client.store, env.clock, run_id)
    worker._news(run_id)


def test_cancel_while_a_failed_run_waits_for_a_running_sibling_lets_it_finish(
    env: WorkflowTestEnv,
) -> None:
    run_id = env.start(edge_flows.sibling_outlives_failure, {"key": "g"})

    async def scenario(worker: Worker) -> None:
        edge_flows.gates["g"] = asyncio.Event()
        await poll_until(
            lambda: run_id in worker.drivers and worker.drivers[run_id].finishing,
            "the workflow failed and waits for its sibling",
        )
        driver = worker.drivers[run_id]
        cancel_now(env, worker, run_id)
        await poll_until(lambda: driver.task is not None and driver.task.done(), "cancel seen")
        edge_flows.gates["g"].set()

    in_worker(env, run_id, scenario)
    assert flows.calls["g.started"] == 1
    assert flows.calls["g.finished"] == 1  # not interrupted mid-flight
    assert env.status(run_id).state == "canceled"


def test_restart_keeping_an_action_that_finished_after_the_cancel_uses_its_result(
    env: WorkflowTestEnv,
) -> None:
    run_id = env.start(edge_flows.action_then_more, {"key": "k"})

    async def scenario(worker: Worker) -> None:
        edge_flows.gates["k"] = asyncio.Event()
        await poll_until(lambda: flows.calls["k.started"] == 1, "the action runs")
        cancel_now(env, worker, run_id)
        edge_flows.gates["k"].set()  # it finishes after the cancel

    in_worker(env, run_id, scenario)
    assert env.status(run_id).state == "canceled"
    assert env.status(run_id).to_dict()["steps"][0]["state"] == "canceled"  # result dropped

    env.client.restart(run_id, from_step=1)
    env.run_until_idle()
    assert env.result(run_id) == ["k", "after"]
    assert flows.calls["k.started"] == 1  # not run again, and not "Interrupted"


def test_restart_does_not_deliver_again_an_event_the_first_pass_consumed(
    env: WorkflowTestEnv,
) -> None:
    run_id = env.start(edge_flows.approval, {"key": "ap"})
    env.run_until_idle()
    env.send_event(run_id, "approved", "yes")
    env.run_until_idle()
    assert env.result(run_id) == "yes"

    env.client.restart(run_id, from_step=1)  # ask again: wait for a new answer
    env.run_until_idle()
    assert env.status(run_id).state == "in_progress"
    assert flows.calls["ap.acted"] == 1
    env.send_event(run_id, "approved", "again")
    env.run_until_idle()
    assert env.result(run_id) == "again"
    assert flows.calls["ap.acted"] == 2


def test_cancel_right_after_a_child_is_created_cancels_the_child(env: WorkflowTestEnv) -> None:
    """The parent's cancel is seen while its child's journal is being created."""
    parent_id = env.start(flows.parent, {"n": 7})
    created: list[str] = []

    class CancelDuringCreate(Worker):
        def create_child(self, *args: Any) -> str:
            # (I/O thread) `wfl cancel PARENT` lands now, and the worker sees it
            ops.cancel(self.store, self.clock, parent_id)
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._news, parent_id)
            deadline = time.monotonic() + 20
            while not self.drivers[parent_id].state.cancel_requested:
                assert time.monotonic() < deadline, "the worker never saw the cancel"
                time.sleep(0.002)
            created.append(args[3])  # (workflow, args, parent, run_id, ...)
            return super().create_child(*args)

    async def scenario(worker: Worker) -> None:
        await poll_until(lambda: bool(created), "the child was created")

    worker = CancelDuringCreate(env.client.store, clock=env.clock, listen=False)
    in_worker(env, parent_id, scenario, worker)
    env.run_until_idle()  # a later worker finds the child, if it was left running
    assert env.status(parent_id).state == "canceled"
    assert env.status(created[0]).state == "canceled"
    assert flows.calls["child7"] == 0


# -- wake-ups and clocks ----------------------------------------------------------------------


def test_cancel_whose_wake_up_was_dropped_is_found_by_the_rescan(env: WorkflowTestEnv) -> None:
    """A full datagram queue drops the news; the rescan must look at a sleeping run too."""
    run_id = env.start(flows.long_sleep, {"days": 30})

    async def main() -> None:
        worker = Worker(env.client.store, clock=env.clock, listen=True)
        done = asyncio.create_task(worker.run())
        await poll_until(
            lambda: run_id in worker._waking and run_id not in worker.drivers,
            "the run sleeps, evicted",
        )
        # `wfl cancel` whose datagram was dropped: the journal changes, nobody is told
        path = env.client.store.journal_path(run_id)
        journal.update(path, lambda _existing: [records.cancel(env.now())])
        env.clock.advance(11)  # past the rescan interval (seconds, not the 30 days)
        worker.activity()
        try:
            await poll_until(
                lambda: ops.read_state(env.client.store, run_id).end is not None,
                "a worker wound the canceled run up",
                within=10,
            )
        finally:
            worker.stop()
            await asyncio.wait_for(done, 20)

    asyncio.run(main())
    assert env.status(run_id).state == "canceled"


def test_run_due_now_is_driven_after_the_clock_stepped_back(env: WorkflowTestEnv) -> None:
    """An NTP step or a VM restore: records were written while the clock was an hour ahead."""
    run_id = env.start(edge_flows.approval, {"key": "b"})
    env.run_until_idle()
    env.clock.advance(3600)
    env.client.send_event(run_id, "approved", "yes")  # recorded at the clock's +1 h
    env.clock.jump(env.now() - 3500)  # the clock is corrected: back by almost an hour
    env.advance(0)  # one pass of a worker, as `wfl worker --once`
    assert env.result(run_id) == "yes"


def test_step_scheduled_before_the_clock_stepped_back_runs_now(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.one_action, {"key": "c"})
    ahead = env.now() + 3600  # a worker with its clock an hour ahead scheduled step 0, then died
    sched = records.sched(0, "action", "count", {"key": "c"}, ahead, ahead)
    journal.update(env.client.store.journal_path(run_id), lambda _existing: [sched])
    env.advance(0)
    assert env.result(run_id) == "c"
    assert flows.calls["c"] == 1


# -- cleanup against a concurrent restart ---------------------------------------------------


def test_cleanup_racing_a_restart_never_loses_the_restarted_run(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wfl restart` lands just after `wfl cleanup` found the run finished: either the
    restart is refused (the run is gone) or the run stays, restarted; never a restart that
    says it worked on a run that is then deleted."""
    run_id = env.start(flows.one_action, {"key": "r"})
    env.run_until_idle()
    outcome: dict[str, Any] = {}

    def restart() -> None:
        try:
            outcome["restarted"] = ops.restart(env.client.store, env.clock, run_id, 0)
        except Exception as exc:
            outcome["refused"] = exc

    fold = RunState.from_records
    main = threading.current_thread()

    def looked(records: list[dict[str, Any]]) -> RunState:
        state = fold(records)
        if threading.current_thread() is main and state.finished and not outcome:
            racer = threading.Thread(target=restart)
            racer.start()
            racer.join(timeout=0.5)  # it lands now, unless cleanup holds the journal's lock
            outcome.setdefault("racer", racer)
        return state

    monkeypatch.setattr(RunState, "from_records", staticmethod(looked))
    deleted = ops.cleanup(env.client.store, run_id)
    outcome["racer"].join(timeout=20)
    monkeypatch.undo()

    if "restarted" in outcome:
        assert env.client.store.exists(run_id), "restart said it worked, but the run is gone"
        assert run_id not in deleted
    else:
        assert isinstance(outcome["refused"], RunNotFound)
        assert not env.client.store.exists(run_id)


# -- on_complete: at least once, every call recorded, one key -------------------------------


def test_on_complete_sees_a_stable_idempotency_key_and_its_start_is_recorded(
    env: WorkflowTestEnv,
) -> None:
    edge_flows.oc_keys.clear()
    run_id = env.start(flows.one_action, {"key": "o"}, on_complete=edge_flows.keyed_completion)
    env.run_until_idle()
    assert edge_flows.oc_keys == [(f"{run_id}-on_complete", 1)]
    kinds = [r["t"] for r in env.client.store.read(run_id)]
    assert kinds[-2:] == ["ocs", "oc"]

    env.client.restart(run_id, from_step=0)  # a new outcome: a new completion, its own key
    env.run_until_idle()
    assert edge_flows.oc_keys[-1] == (f"{run_id}-on_complete-1", 1)


def test_journal_without_on_complete_start_records_still_reads(env: WorkflowTestEnv) -> None:
    """Journals of wfl before the "ocs" record: a crash inside on_complete is retried."""
    edge_flows.oc_keys.clear()
    run_id = env.start(flows.one_action, {"key": "p"}, on_complete=edge_flows.keyed_completion)
    at = env.now()
    path = env.client.store.journal_path(run_id)
    journal.update(path, lambda _e: [records.end("canceled", at)])  # no "ocs", no "oc"
    env.run_until_idle()
    assert edge_flows.oc_keys == [(f"{run_id}-on_complete", 1)]
    assert env.client.status(run_id).run_state.on_complete_ran


def test_polling_a_run_that_closed_meanwhile_logs_no_error(
    env: WorkflowTestEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """A poll can come after its run closed (one that waited for the run's last write, a
    child's news): the closed journal has nothing to say, and that is not an error."""
    run_id = env.start(edge_flows.action_then_more, {"key": "p"})
    live: list[Any] = []

    async def scenario(worker: Worker) -> None:
        edge_flows.gates["p"] = asyncio.Event()
        await poll_until(lambda: run_id in worker.drivers, "the run is live")
        live.append(worker.drivers[run_id])
        edge_flows.gates["p"].set()

    in_worker(env, run_id, scenario)
    assert env.status(run_id).state == "completed"
    with caplog.at_level(logging.ERROR):
        live[0].poll()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
