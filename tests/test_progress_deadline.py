"""SPEC §8: progress and deadlines, driven in-process under the fake clock."""

from __future__ import annotations

import asyncio

import pattern_flows as pf
import pytest

from wfl import WorkflowFailed
from wfl.clock import FakeClock
from wfl.testing import WorkflowTestEnv
from wfl.worker import Worker


def records_of(env: WorkflowTestEnv, run_id: str, kind: str) -> list[dict]:
    return [r for r in env.client.store.read(run_id) if r["t"] == kind]


# -- progress -----------------------------------------------------------------------------------


def test_progress_is_the_latest_value_in_status_json(wfl_env: WorkflowTestEnv) -> None:
    run_id = wfl_env.start(pf.batch, {"total": 3})
    wfl_env.advance(61)  # item0, progress 1/3, sleep; item1, progress 2/3, sleep...
    st = wfl_env.status(run_id)
    assert st.state == "in_progress"
    assert st.to_dict()["progress"] == {"done": 2, "total": 3}
    assert st.progress == {"done": 2, "total": 3}
    wfl_env.run_until_idle()
    assert wfl_env.status(run_id).to_dict()["progress"] == {"done": 3, "total": 3}


def test_replay_never_records_progress_twice(wfl_env: WorkflowTestEnv) -> None:
    # every drive below evicts the run and replays it from the journal
    run_id = wfl_env.start(pf.batch, {"total": 4})
    for _ in range(6):
        wfl_env.advance(30)
    wfl_env.run_until_idle()
    marks = [r["value"]["done"] for r in records_of(wfl_env, run_id, "progress")]
    assert marks == [1, 2, 3, 4]


def test_progress_calls_added_to_running_code_break_no_replay(wfl_env: WorkflowTestEnv) -> None:
    pf.knobs["progress"] = False  # the journal is written by code without progress calls
    run_id = wfl_env.start(pf.batch, {"total": 3})
    wfl_env.advance(61)
    assert records_of(wfl_env, run_id, "progress") == []
    pf.knobs["progress"] = True  # new code: a progress call after every item
    wfl_env.run_until_idle()
    st = wfl_env.status(run_id)
    assert st.state == "completed", st.error
    assert st.result == 3
    # calls in the replayed part (items 0 and 1) are history: only the last item's
    # progress is new
    assert [r["value"]["done"] for r in records_of(wfl_env, run_id, "progress")] == [3]


def test_progress_calls_removed_from_running_code_break_no_replay(
    wfl_env: WorkflowTestEnv,
) -> None:
    run_id = wfl_env.start(pf.batch, {"total": 3})
    wfl_env.advance(61)
    pf.knobs["progress"] = False
    wfl_env.run_until_idle()
    assert wfl_env.status(run_id).state == "completed"


def test_progress_over_64_kib_fails_the_run_saying_so(wfl_env: WorkflowTestEnv) -> None:
    with pytest.raises(WorkflowFailed, match=r"set_progress\(\): value too large"):
        wfl_env.run(pf.big_progress)


# -- deadlines ----------------------------------------------------------------------------------


def test_run_unfinished_at_its_deadline_fails_with_deadline_exceeded(
    wfl_env: WorkflowTestEnv,
) -> None:
    start = wfl_env.now()
    run_id = wfl_env.start(pf.slow, {"hours": 2}, deadline=1800, on_complete=pf.note)
    wfl_env.run_until_idle()
    st = wfl_env.status(run_id)
    assert st.state == "failed"
    assert st.error.startswith("DeadlineExceeded: ")
    assert wfl_env.now() == pytest.approx(start + 1800)  # on time, not at the sleep's end
    assert st.to_dict()["deadline"] is not None
    assert pf.completions == [(run_id, {"kind": "failed", "error": st.error}, None)]


def test_run_that_ends_in_time_is_not_touched_by_its_deadline(wfl_env: WorkflowTestEnv) -> None:
    assert wfl_env.run(pf.slow, {"hours": 1}, deadline=7200) == "woke"


def test_workflow_defined_deadline_applies_and_start_deadline_overrides_it(
    wfl_env: WorkflowTestEnv,
) -> None:
    with pytest.raises(WorkflowFailed, match="DeadlineExceeded"):
        wfl_env.run(pf.quick_or_fail)  # define(deadline=600), sleeps an hour
    assert wfl_env.run(pf.quick_or_fail, deadline=7200) == "woke"


def test_child_deadline_is_the_sooner_of_its_own_and_its_parents(
    wfl_env: WorkflowTestEnv,
) -> None:
    start = wfl_env.now()
    parent = wfl_env.start(pf.parent_of_slow, deadline=3600)
    wfl_env.run_until_idle()
    assert wfl_env.status(parent).state == "failed"
    (child,) = [r for r in wfl_env.client.list() if r.id != parent]
    child_st = wfl_env.status(child.id)
    assert child_st.state == "failed"
    assert child_st.error.startswith("DeadlineExceeded")
    assert wfl_env.status(parent).deadline == child_st.deadline
    assert child_st.run_state.deadline == pytest.approx(start + 3600)


def _past_deadline_with_a_step_in_flight(env: WorkflowTestEnv, flow: object) -> str:
    """Start `flow` (its first step blocks on pf.gate) with a 60 s deadline; let the deadline
    pass while that step runs, then let the step finish; return the run id."""
    run_id = env.start(flow, deadline=60, on_complete=pf.note)
    worker = Worker(env.client.store, clock=env.clock, listen=False)

    async def scenario() -> None:
        task = asyncio.create_task(worker.run(until=lambda: bool(pf.completions)))
        while not pf.entered.is_set():  # the action is running in a step thread
            await asyncio.sleep(0.001)
        env.clock.advance(61)
        worker.activity()
        while env.status(run_id).state != "failed":  # the end is recorded at the deadline
            await asyncio.sleep(0.001)
        assert not pf.completions  # on_complete waits for the step still in flight
        pf.gate.set()  # now the step finishes: the run drops its result, the journal keeps it
        await task

    asyncio.run(scenario())
    return run_id


def test_deadline_drops_the_result_of_a_step_in_flight() -> None:
    clock = FakeClock()
    with WorkflowTestEnv(start=clock.now()) as env:
        run_id = _past_deadline_with_a_step_in_flight(env, pf.stuck)
        st = env.status(run_id)
        assert st.state == "failed"
        assert st.error.startswith("DeadlineExceeded")
        assert [s.state for s in st.steps] == ["canceled"]
        kinds = [r["t"] for r in env.client.store.read(run_id)]
        assert kinds.index("end") < kinds.index("done") < kinds.index("ocs")
        assert pf.completions[0][1]["kind"] == "failed"
        assert pf.calls["stuck"] == 1


def test_restart_keeping_a_step_that_finished_after_the_deadline_uses_its_result() -> None:
    clock = FakeClock()
    with WorkflowTestEnv(start=clock.now()) as env:
        run_id = _past_deadline_with_a_step_in_flight(env, pf.stuck_then_more)
        assert env.status(run_id).state == "failed"
        env.client.restart(run_id, from_step=1)
        env.run_until_idle()
        assert env.result(run_id) == ["stuck", "after"]
        assert pf.calls["stuck"] == 1  # not run again, and not "Interrupted"


def test_why_names_the_deadline_and_a_passed_one(wfl_env: WorkflowTestEnv) -> None:
    from wfl import views

    run_id = wfl_env.start(pf.slow, {"hours": 2}, deadline=1800)
    wfl_env.advance(1)
    why = views.explain_run(wfl_env.client, run_id)
    assert why.startswith("a timer: step 0 (sleep) is due at ")
    assert "; its deadline is " in why
    wfl_env.clock.advance(3600)  # no worker ran meanwhile
    why = views.explain_run(wfl_env.client, run_id)
    assert "its deadline passed at " in why


def test_a_restarted_run_gets_its_deadlines_duration_again(wfl_env: WorkflowTestEnv) -> None:
    run_id = wfl_env.start(pf.slow, {"hours": 1}, deadline=1800)
    wfl_env.run_until_idle()
    assert wfl_env.status(run_id).state == "failed"
    wfl_env.client.restart(run_id)
    restarted_at = wfl_env.now()
    assert wfl_env.status(run_id).run_state.deadline == pytest.approx(restarted_at + 1800)
    wfl_env.run_until_idle()
    st = wfl_env.status(run_id)
    assert st.state == "failed"
    assert wfl_env.now() == pytest.approx(restarted_at + 1800)  # not at once


def test_a_journal_written_before_progress_existed_replays_under_code_that_reports_it(
    wfl_env: WorkflowTestEnv,
) -> None:
    """tests/journals/batch_before_progress.journal was written by wfl before §8 (commit
    2038334) running `batch` without set_progress calls: one item done, a sleep pending."""
    from pathlib import Path

    from wfl import journal

    golden = Path(__file__).parent / "journals" / "batch_before_progress.journal"
    records = journal.read(golden).records
    assert all(r["t"] != "progress" for r in records)
    run_id = records[0]["id"]
    records[0]["flow"] = pf.__file__  # where the workflow lives here, with progress calls
    journal.create(wfl_env.client.store.journal_path(run_id), records)
    wfl_env.run_until_idle()
    st = wfl_env.status(run_id)
    assert st.state == "completed", st.error
    assert st.result == 3
    marks = [r["value"] for r in records_of(wfl_env, run_id, "progress")]
    assert marks == [{"done": 2, "total": 3}, {"done": 3, "total": 3}]  # none for replayed item0


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), "30m", True])
def test_a_deadline_that_is_no_positive_duration_is_refused(
    wfl_env: WorkflowTestEnv, bad: object
) -> None:
    from wfl import WflError, WorkflowManager

    with pytest.raises(WflError, match="deadline"):
        wfl_env.start(pf.slow, deadline=bad)
    with pytest.raises(WflError, match="deadline"):
        WorkflowManager().define(deadline=bad)
    assert wfl_env.client.list() == []
