"""Semantic tests of the engine (SPEC §1, §2, §4, §6), driven through wfl.testing's fake clock."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import flows
import pytest

from wfl import (
    DeterminismViolation,
    RetryPolicy,
    WorkflowCanceled,
    WorkflowFailed,
    WorkflowManager,
    ops,
)
from wfl.clock import FakeClock
from wfl.errors import InvalidArguments, RefusedOperation
from wfl.replay import child_run_id
from wfl.testing import WorkflowTestEnv
from wfl.worker import Worker

REPO = Path(__file__).resolve().parent.parent
GREETING = REPO / "sample_flows" / "greeting.py"


@pytest.fixture(params=["file", "postgresql"])
def env(request: pytest.FixtureRequest) -> Any:
    """Every engine test runs on both stores (a temp directory; a fresh PostgreSQL database),
    except those marked `files_only` (they look at journal files themselves)."""
    if request.param == "file":
        with WorkflowTestEnv() as e:
            yield e
        return
    if request.node.get_closest_marker("files_only"):
        pytest.skip("looks at journal files")
    with WorkflowTestEnv(store=request.getfixturevalue("pg_url")) as e:
        yield e


def records(env: WorkflowTestEnv, run_id: str, t: str | None = None) -> list[dict[str, Any]]:
    recs = env.client.store.read(run_id)
    return [r for r in recs if t is None or r["t"] == t]


def steps(env: WorkflowTestEnv, run_id: str) -> list[dict[str, Any]]:
    return env.status(run_id).to_dict()["steps"]


def failed_error(env: WorkflowTestEnv, run_id: str) -> str:
    with pytest.raises(WorkflowFailed) as info:
        env.result(run_id)
    return info.value.error


def drive_with_worker(env: WorkflowTestEnv) -> None:
    """One fresh worker, as `wfl worker --once` would run: drains what is due now."""
    worker = Worker(env.client.store, clock=env.clock, listen=False)
    asyncio.run(worker.run(once=True))


# --------------------------------------------------------------------------------------------
# starting runs: arguments and results


def test_greeting_flow_returns_the_greeting(env: WorkflowTestEnv) -> None:
    result = env.run(f"{GREETING}:greet", {"name": "James"})
    assert result == "The query says... Hi James! The action says... Hi back!"


def test_greeting_reply_step_waits_two_seconds(env: WorkflowTestEnv) -> None:
    run_id = env.start(f"{GREETING}:greet", {"name": "Ada"})
    env.advance(0)
    st = steps(env, run_id)
    assert [(s["name"], s["kind"], s["state"]) for s in st] == [
        ("greeting_query", "query", "done"),
        ("reply", "action", "scheduled"),
    ]
    env.advance(1.9)
    assert env.status(run_id).state == "in_progress"
    env.advance(0.2)
    assert env.status(run_id).state == "completed"


def test_string_argument_is_coerced_to_the_int_annotation(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.typed, {"count": "5"})
    assert env.status(run_id).args == {"count": 5, "label": "none"}  # defaults are recorded
    env.run_until_idle()
    assert env.result(run_id) == {"count": 5, "type": "int", "label": "none"}


def test_missing_argument_is_refused_at_start(env: WorkflowTestEnv) -> None:
    with pytest.raises(InvalidArguments, match="count"):
        env.start(flows.typed, {})
    assert env.client.list() == []


def test_unknown_argument_is_refused_at_start(env: WorkflowTestEnv) -> None:
    with pytest.raises(InvalidArguments, match="colour"):
        env.start(flows.typed, {"count": 1, "colour": "red"})


def test_uncoercible_argument_is_refused_at_start(env: WorkflowTestEnv) -> None:
    with pytest.raises(InvalidArguments, match="count"):
        env.start(flows.typed, {"count": "five"})


def test_return_value_not_matching_returns_fails_the_run(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.wrong_return, on_complete=flows.record_completion, context="ctx")
    env.run_until_idle()
    assert env.status(run_id).state == "failed"
    assert "return value" in failed_error(env, run_id)
    assert len(flows.completions) == 1
    _, outcome, context = flows.completions[0]
    assert outcome["kind"] == "failed"
    assert "return value of workflow wrong_return" in outcome["error"]
    assert context == "ctx"


def test_return_value_is_coerced_by_returns(env: WorkflowTestEnv) -> None:
    assert env.run(flows.coerced_return) == 7


# --------------------------------------------------------------------------------------------
# retries


def test_action_failing_twice_succeeds_on_third_attempt(env: WorkflowTestEnv) -> None:
    result = env.run(flows.retried, {"key": "f", "failures": 2, "max_attempts": 3})
    assert result == "f ok after 3"
    assert flows.calls["f"] == 3
    run_id = env.client.list()[0].id
    (step,) = steps(env, run_id)
    assert step["attempts"] == 3
    assert step["state"] == "done"
    assert step["error"] is None


def test_retry_backoff_obeys_policy_with_jitter(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.retried, {"key": "f", "failures": 4, "max_attempts": 5})
    env.run_until_idle()
    assert env.result(run_id) == "f ok after 5"
    fails = records(env, run_id, "fail")
    assert [f["attempt"] for f in fails] == [1, 2, 3, 4]
    for f in fails:
        k = f["attempt"]
        nominal = 2.0 * 3.0 ** (k - 1)
        wait = f["retry_at"] - f["at"]
        assert 0.5 * nominal <= wait < 1.5 * nominal, (k, wait)
    # each attempt starts no earlier than its backoff allows
    atts = records(env, run_id, "att")
    for f, nxt in zip(fails, atts[1:], strict=True):
        assert nxt["at"] >= f["retry_at"]


def test_retry_waits_are_timers_on_the_fake_clock(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.retried, {"key": "f", "failures": 1, "max_attempts": 2})
    env.advance(0)
    assert flows.calls["f"] == 1
    (fail,) = records(env, run_id, "fail")
    env.advance(fail["retry_at"] - env.now() - 0.01)
    assert flows.calls["f"] == 1  # not before its backoff
    env.advance(0.02)
    assert flows.calls["f"] == 2
    assert env.status(run_id).state == "completed"


def test_default_retry_policy_is_convex_s() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.initial_backoff, policy.base) == (5, 0.5, 2.0)
    assert WorkflowManager().default_retry == RetryPolicy()


def test_retry_true_uses_the_manager_default_policy(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.retry_true, {"key": "rt"})
    env.run_until_idle()
    assert flows.calls["rt"] == 5
    assert steps(env, run_id)[0]["attempts"] == 5
    waits = [f["retry_at"] - f["at"] for f in records(env, run_id, "fail")[:-1]]
    for k, wait in enumerate(waits, start=1):
        assert 0.25 * 2 ** (k - 1) <= wait < 0.75 * 2 ** (k - 1)
    assert env.status(run_id).state == "failed"


@pytest.mark.parametrize("kind", ["query", "mutation"])
def test_queries_and_mutations_are_not_retried(env: WorkflowTestEnv, kind: str) -> None:
    run_id = env.start(flows.unretried_kind, {"kind": kind, "key": kind})
    env.run_until_idle()
    assert flows.calls[kind] == 1
    (step,) = steps(env, run_id)
    assert (step["attempts"], step["state"]) == (1, "failed")
    assert "RuntimeError" in failed_error(env, run_id)


def test_retry_policy_on_an_action_retries_it(env: WorkflowTestEnv) -> None:
    env.start(flows.unretried_kind, {"kind": "action", "key": "act"})
    env.run_until_idle()
    assert flows.calls["act"] == 5  # the counterpart of the test above: retry= is honoured


def test_actions_are_not_retried_by_default(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.action_default, {"key": "once"})
    env.run_until_idle()
    assert flows.calls["once"] == 1
    assert env.status(run_id).state == "failed"


def test_retry_actions_by_default_retries_with_the_manager_policy(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.eager_action, {"key": "eager"})
    env.run_until_idle()
    assert flows.calls["eager"] == 4
    fails = records(env, run_id, "fail")
    wait = fails[0]["retry_at"] - fails[0]["at"]
    assert 0.5 <= wait < 1.5


def test_retry_false_opts_out_of_retry_actions_by_default(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.eager_opt_out, {"key": "optout"})
    env.run_until_idle()
    assert flows.calls["optout"] == 1
    assert env.status(run_id).state == "failed"


def test_non_retryable_error_stops_retries_at_once(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.non_retryable, {"key": "nr"})
    env.run_until_idle()
    assert flows.calls["nr"] == 1
    (step,) = steps(env, run_id)
    assert step["attempts"] == 1
    assert step["error"] == "NonRetryableError: nr gives up"


def test_step_failure_is_catchable_with_type_and_message(env: WorkflowTestEnv) -> None:
    result = env.run(flows.catches, {"key": "k"})
    assert result == {
        "step": 0,
        "name": "always_fails",
        "type": "RuntimeError",
        "message": "k is broken",
        "after": "k-after",
    }


def test_uncaught_step_failure_fails_the_run(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.uncaught, {"key": "u"})
    env.run_until_idle()
    st = env.status(run_id)
    assert st.state == "failed"
    assert "StepFailed" in st.error
    assert "RuntimeError: u is broken" in st.error
    assert flows.calls["u-never"] == 0
    with pytest.raises(WorkflowFailed, match="u is broken"):
        env.result(run_id)


def test_timeout_fails_a_slow_attempt(env: WorkflowTestEnv) -> None:
    result = env.run(flows.timed_out, {"key": "slow", "seconds": 10.0, "timeout": 0.05})
    assert result["type"] == "TimeoutError"
    assert "timeout" in result["message"]
    assert flows.calls["slow"] == 1


def test_timeout_does_not_affect_a_fast_step(env: WorkflowTestEnv) -> None:
    assert env.run(flows.timed_out, {"key": "fast", "seconds": 0.0, "timeout": 5.0}) == "fast"


def test_step_context_gives_run_id_step_attempt_and_idempotency_key(
    env: WorkflowTestEnv,
) -> None:
    result = env.run(flows.introspect)
    run_id = result["run_id"]
    assert result["info"] == {
        "run_id": run_id,
        "step": 0,
        "attempt": 1,
        "idempotency_key": f"{run_id}-0",
    }


def test_attempt_is_on_disk_as_running_before_the_step_executes(env: WorkflowTestEnv) -> None:
    seen = env.run(flows.peeks, {"dir": env.client.dir})
    assert seen["state"] == "running"
    assert seen["attempts"] == 1
    assert seen["started"] is not None


def test_cancel_during_retry_backoff_stops_retries(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.retried, {"key": "f", "failures": 5, "max_attempts": 5})
    env.advance(0)
    assert flows.calls["f"] == 1
    env.cancel(run_id)
    env.advance(3600)
    assert flows.calls["f"] == 1
    st = env.status(run_id)
    assert st.state == "canceled"
    assert st.steps[0].state == "canceled"


# --------------------------------------------------------------------------------------------
# delayed steps


@pytest.mark.parametrize("mode", ["run_after", "timedelta", "datetime", "epoch"])
def test_delayed_step_runs_only_when_due(env: WorkflowTestEnv, mode: str) -> None:
    run_id = env.start(flows.delayed, {"mode": mode, "delay": 60.0, "base": env.now()})
    env.advance(0)
    assert flows.calls["delayed"] == 0
    assert steps(env, run_id)[0]["state"] == "scheduled"
    assert env.status(run_id).next_wake_at is not None
    env.advance(59)
    assert flows.calls["delayed"] == 0
    env.advance(2)
    assert flows.calls["delayed"] == 1
    assert env.result(run_id) == "delayed"


def test_naive_datetime_for_run_at_is_an_error() -> None:
    from wfl.step import _options

    with pytest.raises(ValueError, match="aware"):
        _options({"run_at": datetime(2030, 1, 1)})


# --------------------------------------------------------------------------------------------
# parallel steps


def test_gathered_steps_are_numbered_in_call_order(env: WorkflowTestEnv) -> None:
    assert env.run(flows.parallel) == ["p0", "p1", "p2"]
    run_id = env.client.list()[0].id
    st = steps(env, run_id)
    assert [(s["step"], s["name"], s["state"]) for s in st] == [
        (0, "acount", "done"),
        (1, "second", "done"),
        (2, "acount", "done"),
    ]


def test_a_failing_parallel_step_fails_the_run_and_siblings_finish(
    env: WorkflowTestEnv,
) -> None:
    run_id = env.start(flows.parallel_failure)
    env.run_until_idle()
    assert env.status(run_id).state == "failed"
    assert flows.calls["slow-sibling"] == 1
    assert flows.calls["fast-sibling"] == 1
    st = steps(env, run_id)
    assert [s["state"] for s in st] == ["done", "failed", "done"]
    assert "RuntimeError: bad is broken" in failed_error(env, run_id)


def test_siblings_waiting_for_a_slot_still_run_after_a_failure(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.serial_failure)
    env.run_until_idle()
    assert env.status(run_id).state == "failed"
    assert flows.calls["queued1"] == 1
    assert flows.calls["queued2"] == 1
    assert [s["state"] for s in steps(env, run_id)] == ["failed", "done", "done"]


def test_parallel_steps_run_concurrently_by_default(env: WorkflowTestEnv) -> None:
    env.run(flows.fan_out, {"width": 3})
    assert flows.concurrency["max"] == 3


def test_max_parallelism_one_runs_steps_one_at_a_time(env: WorkflowTestEnv) -> None:
    assert env.run(flows.fan_out_serial, {"width": 3}) == ["t0", "t1", "t2"]
    assert flows.concurrency["max"] == 1
    assert sum(flows.calls.values()) == 3


def test_workflow_max_parallelism_caps_its_steps(env: WorkflowTestEnv) -> None:
    wide = env.start(flows.fan_out, {"width": 3})
    narrow = env.start(flows.fan_out_one, {"width": 3})
    env.run_until_idle()
    assert env.result(wide) == ["t0", "t1", "t2"]
    assert env.result(narrow) == ["one0", "one1", "one2"]
    assert flows.concurrency["one"] == 1
    assert flows.concurrency["t"] == 3


# --------------------------------------------------------------------------------------------
# replay and determinism


def test_replay_does_not_re_execute_completed_steps(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.three_steps)
    drives = 0
    while not env.status(run_id).finished:
        drive_with_worker(env)  # a fresh worker (a fresh coroutine) every time
        env.clock.advance(30)
        drives += 1
        assert drives < 20
    assert drives >= 3
    assert env.result(run_id) == ["s0", "s2", "s4"]
    assert flows.calls == {"s0": 1, "s2": 1, "s4": 1}


def test_evicted_run_is_replayed_without_re_execution(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.three_steps)

    events: list[str] = []

    async def drive() -> None:
        worker = Worker(
            env.client.store,
            clock=env.clock,
            listen=False,
            evict_after=0.0,
            on_event=lambda e: events.append(e.kind),
        )
        env.clock.skip = True
        try:
            await worker.run(stop_when_idle=True)
        finally:
            env.clock.skip = False

    asyncio.run(drive())
    assert env.result(run_id) == ["s0", "s2", "s4"]
    assert events.count("evicted") == 2  # once per sleep
    assert events.count("loaded") == 3
    assert flows.calls == {"s0": 1, "s2": 1, "s4": 1}


def test_changed_step_name_is_a_determinism_violation(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.changing)
    env.advance(0)  # step 0 done, waiting for the event
    flows.knobs["name"] = "renamed"
    env.send_event(run_id, "go", "now")
    error = failed_error(env, run_id)
    assert "DeterminismViolation" in error
    assert "step 0" in error
    assert "'first'" in error
    assert "'renamed'" in error
    assert flows.calls["c0"] == 1


def test_changed_step_args_is_a_determinism_violation(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.changing)
    env.advance(0)
    flows.knobs["arg"] = 2
    env.send_event(run_id, "go", "now")
    error = failed_error(env, run_id)
    assert "DeterminismViolation" in error
    assert "step 0" in error
    assert "'value': 1" in error
    assert "'value': 2" in error


def test_determinism_violation_is_the_error_type(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.changing)
    env.advance(0)
    flows.knobs["name"] = "renamed"
    env.send_event(run_id, "go", 1)
    assert env.status(run_id).error.startswith(DeterminismViolation.__name__ + ":")


def test_unstable_args_tolerate_changed_args(env: WorkflowTestEnv) -> None:
    flows.knobs["unstable"] = True
    run_id = env.start(flows.changing)
    env.advance(0)
    flows.knobs["arg"] = 2
    env.send_event(run_id, "go", "now")
    assert env.result(run_id) == [1, "now"]  # the recorded result, not re-executed
    assert flows.calls["c0"] == 1


def test_steps_added_after_recorded_ones_simply_run(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.changing)
    env.advance(0)
    flows.knobs["extra"] = True
    env.send_event(run_id, "go", "now")
    assert env.result(run_id) == [1, "now", "extra"]
    assert flows.calls == {"c0": 1, "extra": 1}


def test_tuple_args_replay_without_a_violation(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.tuple_args)
    env.advance(0)
    env.advance(61)
    assert env.result(run_id) == [[1, 2], ["a", ["b"]]]
    assert flows.calls == {"tuple": 1, "tuple2": 1}


def test_step_results_are_the_same_live_and_on_replay(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.tuple_args)
    env.advance(0)  # live: the step returns a tuple
    env.advance(61)  # replay: the journal holds a list
    assert flows.seen == [[1, 2], [1, 2]]
    assert [type(v) for v in flows.seen] == [list, list]
    assert env.status(run_id).state == "completed"


def test_code_that_catches_a_violation_cannot_run_new_steps(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.swallows_violation)
    env.advance(0)  # step 0 is recorded and waits for its time
    flows.knobs["name"] = "renamed"
    env.advance(61)
    assert "DeterminismViolation" in failed_error(env, run_id)
    assert flows.calls["after-violation"] == 0


def write_record(env: WorkflowTestEnv, run_id: str, record: dict[str, Any]) -> None:
    env.client.store.update(run_id, lambda existing: [record])


def interrupted(env: WorkflowTestEnv, kind: str, retry: bool = False) -> str:
    """A run whose step 0 was attempted by a worker that died mid-step."""
    from wfl import records as rec

    run_id = env.start(flows.delayed_kind, {"kind": kind, "retry": retry})
    env.advance(0)
    write_record(env, run_id, rec.att(0, 1, env.now() + 60))
    env.advance(61)
    env.run_until_idle()
    return run_id


def test_interrupted_action_is_a_failed_attempt_not_re_executed(env: WorkflowTestEnv) -> None:
    run_id = interrupted(env, "action")
    assert flows.calls["action"] == 0
    (step,) = steps(env, run_id)
    assert (step["state"], step["attempts"]) == ("failed", 1)
    assert step["error"].startswith("Interrupted:")
    assert env.status(run_id).state == "failed"


def test_interrupted_action_with_retries_runs_as_the_next_attempt(env: WorkflowTestEnv) -> None:
    run_id = interrupted(env, "action", retry=True)
    assert flows.calls["action"] == 1
    assert flows.contexts[0]["attempt"] == 2
    assert flows.contexts[0]["idempotency_key"] == f"{run_id}-0"
    assert steps(env, run_id)[0]["attempts"] == 2
    assert env.status(run_id).state == "completed"


@pytest.mark.parametrize("kind", ["query", "mutation"])
def test_interrupted_query_or_mutation_runs_again(env: WorkflowTestEnv, kind: str) -> None:
    run_id = interrupted(env, kind)
    assert flows.calls[kind] == 1
    assert env.status(run_id).state == "completed"


# --------------------------------------------------------------------------------------------
# serialization and size limits


def test_unserializable_args_and_results_fail_the_step(env: WorkflowTestEnv) -> None:
    result = env.run(flows.bad_args)
    assert "step 0" in result["args"]
    assert "set" in result["args"]
    assert "step 1" in result["result"]
    assert "set" in result["result"]
    assert flows.calls["never"] == 0  # a step with bad arguments never executes
    assert flows.calls["set"] == 1


def test_unserializable_workflow_arguments_are_refused(env: WorkflowTestEnv) -> None:
    with pytest.raises(InvalidArguments, match="set"):
        env.start(flows.echo, {"value": {1}})


def test_step_result_over_result_limit_fails_the_step(env: WorkflowTestEnv) -> None:
    message = env.run(flows.too_big_result)
    assert "step return value too large" in message
    assert "result_limit" in message


def test_journal_over_journal_limit_fails_the_run(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.journal_hog, on_complete=flows.record_completion)
    env.run_until_idle()
    error = failed_error(env, run_id)
    assert "journal_limit" in error
    assert "store big data elsewhere" in error
    from wfl import journal

    size = sum(len(journal.frame(r)) for r in env.client.store.read(run_id))
    assert size < 4096 + 1024
    assert [c[1]["kind"] for c in flows.completions] == ["failed"]


# --------------------------------------------------------------------------------------------
# cancel and cleanup


def test_cancel_of_a_scheduled_step(env: WorkflowTestEnv) -> None:
    run_id = env.start(
        flows.scheduled_later, on_complete=flows.record_completion, context={"who": "me"}
    )
    env.advance(0)
    assert steps(env, run_id)[0]["state"] == "scheduled"
    env.cancel(run_id)
    st = env.status(run_id)
    assert st.state == "canceled"
    assert st.steps[0].state == "canceled"
    env.advance(7200)
    assert flows.calls["later"] == 0
    assert flows.completions == [(run_id, {"kind": "canceled"}, {"who": "me"})]
    with pytest.raises(WorkflowCanceled):
        env.result(run_id)


def test_cancel_of_an_in_flight_step_drops_its_result(env: WorkflowTestEnv) -> None:
    run_id = env.start(
        flows.cancels_itself, {"dir": env.client.dir}, on_complete=flows.record_completion
    )
    env.run_until_idle()
    assert flows.calls["inflight"] == 1
    assert flows.calls["after-cancel"] == 0
    st = env.status(run_id)
    assert st.state == "canceled"
    assert st.steps[0].state == "canceled"  # the run dropped the result...
    # ...which the journal keeps, for a restart that keeps this step (it did run)
    assert [r["n"] for r in records(env, run_id, "done")] == [0]
    assert [c[1] for c in flows.completions] == [{"kind": "canceled"}]


def test_cancel_of_a_run_not_yet_driven(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.one_action, on_complete=flows.record_completion)
    env.cancel(run_id)
    env.run_until_idle()
    assert env.status(run_id).state == "canceled"
    assert flows.calls["a"] == 0
    assert [c[1] for c in flows.completions] == [{"kind": "canceled"}]


def test_cancel_of_a_finished_run_is_refused(env: WorkflowTestEnv) -> None:
    env.run(flows.one_action)
    run_id = env.client.list()[0].id
    with pytest.raises(RefusedOperation, match="completed"):
        env.client.cancel(run_id)


def test_cleanup_of_an_in_progress_run_is_refused(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits)
    env.run_until_idle()
    with pytest.raises(RefusedOperation, match="in progress"):
        env.client.cleanup(run_id)
    assert env.client.store.exists(run_id)


def test_cleanup_of_a_finished_run_deletes_its_journal(env: WorkflowTestEnv) -> None:
    env.run(flows.one_action)
    run_id = env.client.list()[0].id
    assert env.client.store.exists(run_id)
    assert env.client.cleanup(run_id) == [run_id]
    assert not env.client.store.exists(run_id)
    assert env.client.list() == []


# --------------------------------------------------------------------------------------------
# on_complete


def test_on_complete_is_called_once_on_success_with_context(env: WorkflowTestEnv) -> None:
    run_id = env.start(
        flows.three_steps, on_complete=flows.record_completion, context={"name": "James"}
    )
    for _ in range(6):
        env.advance(61)
    assert env.status(run_id).state == "completed"
    env.run_until_idle()
    assert flows.completions == [
        (run_id, {"kind": "success", "return_value": ["s0", "s2", "s4"]}, {"name": "James"})
    ]


def test_on_complete_sees_failure(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.uncaught, {"key": "x"}, on_complete=flows.record_completion)
    env.run_until_idle()
    env.run_until_idle()
    assert len(flows.completions) == 1
    _, outcome, context = flows.completions[0]
    assert outcome["kind"] == "failed"
    assert "x is broken" in outcome["error"]
    assert context is None
    assert outcome["error"] == env.status(run_id).error


def test_on_complete_given_as_a_path(env: WorkflowTestEnv) -> None:
    run_id = env.start(
        flows.one_action, on_complete=f"{flows.__file__}:record_completion", context=[1, 2]
    )
    env.run_until_idle()
    assert flows.completions == [(run_id, {"kind": "success", "return_value": "a"}, [1, 2])]


def test_async_on_complete_is_awaited(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.echo, {"value": 3}, on_complete=flows.arecord_completion)
    env.run_until_idle()
    assert flows.completions == [(run_id, {"kind": "success", "return_value": 3}, None)]


def test_on_complete_that_raises_leaves_the_outcome_standing(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.one_action, on_complete=flows.broken_completion)
    env.run_until_idle()
    env.run_until_idle()
    assert len(flows.completions) == 1  # not retried on every drive
    st = env.status(run_id)
    assert st.state == "completed"
    assert st.result == "a"
    assert "on_complete blew up" in (st.run_state.on_complete_error or "")
    (oc,) = records(env, run_id, "oc")
    assert oc["ok"] is False


# --------------------------------------------------------------------------------------------
# events


def test_event_sent_after_the_run_waits(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits)
    env.run_until_idle()
    assert env.status(run_id).state == "in_progress"
    assert env.status(run_id).next_wake_at is None
    env.send_event(run_id, "go", {"ok": True})
    assert env.result(run_id) == {"ok": True}


def test_event_sent_before_the_run_waits_is_buffered(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits)
    env.client.send_event(run_id, "go", 42)
    env.run_until_idle()
    assert env.result(run_id) == 42


def test_each_event_is_consumed_once(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits_twice)
    env.send_event(run_id, "tick", 1)
    assert env.status(run_id).state == "in_progress"  # one event, two awaits
    env.send_event(run_id, "tick", 2)
    assert env.result(run_id) == [1, 2]


def test_two_buffered_events_feed_two_awaits(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits_twice)
    env.client.send_event(run_id, "tick", "a")
    env.client.send_event(run_id, "tick", "b")
    env.run_until_idle()
    assert env.result(run_id) == ["a", "b"]


def test_events_with_another_name_do_not_wake_the_run(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits)
    env.send_event(run_id, "other", 1)
    assert env.status(run_id).state == "in_progress"


def test_event_to_a_finished_run_is_refused(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits)
    env.send_event(run_id, "go", 1)
    assert env.status(run_id).state == "completed"
    with pytest.raises(RefusedOperation, match="completed"):
        env.client.send_event(run_id, "go", 2)


def test_await_event_timeout_raises_event_timeout(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits_with_timeout, {"timeout": 3600})
    env.advance(0)
    env.advance(3599)
    assert env.status(run_id).state == "in_progress"
    env.advance(2)
    result = env.result(run_id)
    assert result["type"] == "EventTimeout"
    assert "'go'" in result["timeout"]


def test_await_event_timeout_fires_under_run_until_idle(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits_with_timeout, {"timeout": 86400})
    start = env.now()
    env.run_until_idle()
    assert env.result(run_id)["type"] == "EventTimeout"
    assert env.now() - start >= 86400


def test_event_timeout_is_raised_again_on_replay(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.timeout_then_sleep)
    env.advance(0)
    env.advance(61)  # the timeout fires, then the workflow sleeps
    assert steps(env, run_id)[0]["error"].startswith("EventTimeout")
    env.advance(3600)  # a fresh worker replays the timed-out await
    assert env.result(run_id) == "timed out"


def test_event_before_timeout_is_returned(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits_with_timeout, {"timeout": 3600})
    env.advance(10)
    env.send_event(run_id, "go", "in time")
    env.advance(7200)
    assert env.result(run_id) == "in time"


# --------------------------------------------------------------------------------------------
# time


def test_thirty_day_sleep_takes_milliseconds(env: WorkflowTestEnv) -> None:
    start_clock = env.now()
    started = time.perf_counter()
    assert env.run(flows.long_sleep, {"days": 30}) == "woke"
    assert time.perf_counter() - started < 1.0
    assert env.now() - start_clock >= 30 * 86400


def test_sleep_does_not_end_early(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.long_sleep, {"days": 1})
    env.advance(0)
    env.advance(86399)
    assert env.status(run_id).state == "in_progress"
    env.advance(1)
    assert env.result(run_id) == "woke"


def test_now_random_uuid_are_identical_across_replays(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.deterministic_values)
    env.advance(0)
    env.advance(30)
    env.advance(31)  # the sleep ends; now waiting for the event
    env.send_event(run_id, "go")
    result = env.result(run_id)
    assert len(flows.seen) >= 3  # the code ran in several drives
    assert all(values == result for values in flows.seen)
    now, rnd, uid = result
    assert datetime.fromisoformat(now).timestamp() == pytest.approx(env.now() - 61)
    assert 0.0 <= rnd < 1.0
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", uid)


def test_random_values_differ_between_runs(env: WorkflowTestEnv) -> None:
    a = env.start(flows.deterministic_values)
    b = env.start(flows.deterministic_values)
    env.run_until_idle()
    env.send_event(a, "go")
    env.send_event(b, "go")
    assert env.result(a)[1:] != env.result(b)[1:]


# --------------------------------------------------------------------------------------------
# child workflows


def test_child_workflow_result_is_returned(env: WorkflowTestEnv) -> None:
    assert env.run(flows.parent, {"n": 4}) == 40
    assert flows.calls["child4"] == 1


def test_child_is_listed_with_its_own_id(env: WorkflowTestEnv) -> None:
    env.run(flows.parent, {"n": 1})
    runs = {st.workflow: st for st in env.client.list()}
    assert set(runs) == {"parent", "child"}
    assert runs["child"].id != runs["parent"].id
    assert runs["child"].state == "completed"
    assert runs["child"].result == 10
    assert runs["child"].args == {"n": 1, "fail": False}


def test_child_failure_raises_step_failed_in_parent(env: WorkflowTestEnv) -> None:
    result = env.run(flows.parent, {"n": 2, "fail": True})
    assert result["caught"] == "ValueError"
    assert result["message"] == "child 2 failed"


def test_child_with_invalid_arguments_fails_the_step(env: WorkflowTestEnv) -> None:
    result = env.run(flows.parent_with_bad_child_args)
    assert result["type"] == "InvalidArguments"
    assert "'n'" in result["message"]
    assert [st.workflow for st in env.client.list()] == ["parent_with_bad_child_args"]


def test_child_started_again_after_a_crash_is_the_same_run(env: WorkflowTestEnv) -> None:
    # A worker that died after creating the child but before recording it in the parent
    # starts the step again: the child's id comes from the parent's id and step number, so
    # the second creation finds the first child instead of starting another one.
    parent_id = env.start(flows.parent, {"n": 1})
    env.run_until_idle()
    child = next(st for st in env.client.list() if st.workflow == "child")
    assert child.id == child_run_id(parent_id, 0, 0)
    again = ops.create_run(
        env.client.store, env.clock, flows.child, {"n": 1}, parent=[parent_id, 0], run_id=child.id
    )
    assert again == child.id
    assert len(env.client.list()) == 2
    assert env.client.status(child.id).state == "completed"


def test_cancel_of_parent_cancels_child(env: WorkflowTestEnv) -> None:
    parent_id = env.start(flows.parent_of_waiter)
    env.run_until_idle()
    child = next(st for st in env.client.list() if st.workflow == "waiting_child")
    assert child.state == "in_progress"
    env.cancel(parent_id)
    env.run_until_idle()
    assert env.status(parent_id).state == "canceled"
    assert env.status(child.id).state == "canceled"


def test_cleanup_of_parent_removes_child(env: WorkflowTestEnv) -> None:
    parent_id = env.start(flows.parent, {"n": 3})
    env.run_until_idle()
    child_id = next(st.id for st in env.client.list() if st.workflow == "child")
    deleted = env.client.cleanup(parent_id)
    assert sorted(deleted) == sorted([parent_id, child_id])
    assert env.client.list() == []


# --------------------------------------------------------------------------------------------
# restart


def test_restart_from_step_number_re_runs_later_steps_only(env: WorkflowTestEnv) -> None:
    env.run(flows.restartable)
    run_id = env.client.list()[0].id
    assert env.client.restart(run_id, from_step=1) == 1
    env.run_until_idle()
    assert env.result(run_id) == ["r0", "r1", "r2"]
    assert flows.calls == {"r0": 1, "r1": 2, "r2": 2}
    assert len(records(env, run_id, "restart")) == 1


def test_restart_from_step_name(env: WorkflowTestEnv) -> None:
    env.run(flows.restartable)
    run_id = env.client.list()[0].id
    assert env.client.restart(run_id, from_step="middle") == 1
    env.run_until_idle()
    assert flows.calls == {"r0": 1, "r1": 2, "r2": 2}


def test_restart_of_a_failed_run_can_complete(env: WorkflowTestEnv) -> None:
    flows.knobs["fail_last"] = True
    run_id = env.start(flows.restartable, on_complete=flows.record_completion)
    env.run_until_idle()
    assert env.status(run_id).state == "failed"
    flows.knobs["fail_last"] = False
    env.client.restart(run_id, from_step=2)
    env.run_until_idle()
    assert env.result(run_id) == ["r0", "r1", "r2"]
    assert flows.calls == {"r0": 1, "r1": 1, "r2": 2}
    assert [c[1]["kind"] for c in flows.completions] == ["failed", "success"]


def test_restart_keeps_the_journal_append_only(env: WorkflowTestEnv) -> None:
    env.run(flows.restartable)
    run_id = env.client.list()[0].id
    before = env.client.store.read(run_id)
    env.client.restart(run_id)
    env.run_until_idle()
    after = env.client.store.read(run_id)
    assert after[: len(before)] == before
    assert len(after) > len(before)
    assert flows.calls == {"r0": 2, "r1": 2, "r2": 2}


def test_restart_of_a_canceled_run_runs_its_unfinished_steps(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.scheduled_later)
    env.advance(0)
    env.cancel(run_id)
    assert steps(env, run_id)[0]["state"] == "canceled"
    env.client.restart(run_id, from_step=1)  # keep step 0, which never ran
    assert env.status(run_id).state == "in_progress"
    assert steps(env, run_id)[0]["state"] == "scheduled"
    env.advance(3600)
    assert env.result(run_id) == "later"
    assert flows.calls["later"] == 1


def test_restart_of_a_running_run_is_refused(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.waits)
    env.run_until_idle()
    with pytest.raises(RefusedOperation, match="in progress"):
        env.client.restart(run_id, from_step=0)


def test_restart_from_an_unknown_step_is_refused(env: WorkflowTestEnv) -> None:
    env.run(flows.restartable)
    run_id = env.client.list()[0].id
    with pytest.raises(InvalidArguments):
        env.client.restart(run_id, from_step=17)
    with pytest.raises(InvalidArguments):
        env.client.restart(run_id, from_step="nope")


# --------------------------------------------------------------------------------------------
# versioning and logging


def test_step_version_returns_the_version_the_run_was_started_under(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = env.start(flows.versioned)
    env.run_until_idle()
    assert records(env, run_id, "run")[0]["version"] == 1
    monkeypatch.setattr(flows.versioned, "version", 2)  # the code is now version 2
    new_id = env.start(flows.versioned)
    env.run_until_idle()
    env.send_event(run_id, "go")
    env.send_event(new_id, "go")
    assert env.result(run_id) == 1
    assert env.result(new_id) == 2
    assert all(r.get("version") == 1 for r in records(env, run_id, "sched"))


def test_step_logger_logs_each_line_once_across_replays(
    env: WorkflowTestEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wfl.workflow")
    run_id = env.start(flows.logs)
    env.advance(0)
    env.advance(61)
    env.advance(61)
    assert env.result(run_id) == "logged"
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("wfl.workflow")]
    assert lines == ["starting the run", "after the sleep", "finishing"]


# --------------------------------------------------------------------------------------------
# status


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def test_status_json_has_every_documented_key(env: WorkflowTestEnv) -> None:
    run_id = env.start(f"{GREETING}:greet", {"name": "James"})
    fresh = env.status(run_id).to_dict()
    assert fresh["state"] == "in_progress"
    assert fresh["steps"] == []
    env.run_until_idle()
    data = env.status(run_id).to_dict()
    expected = {
        "id": str,
        "workflow": str,
        "flow": str,
        "state": str,
        "args": dict,
        "created_at": str,
        "updated_at": str,
        "steps": list,
    }
    for key, typ in expected.items():
        assert isinstance(data[key], typ), key
    for key in ("result", "error", "next_wake_at"):
        assert key in data
    assert data["id"] == run_id
    assert data["workflow"] == "greet"
    assert data["flow"] == str(GREETING)
    assert data["state"] == "completed"
    assert data["args"] == {"name": "James"}
    assert data["result"].startswith("The query says")
    assert data["error"] is None
    assert data["next_wake_at"] is None
    assert ISO.match(data["created_at"])
    assert ISO.match(data["updated_at"])
    step_keys = {
        "step", "name", "kind", "state", "attempts", "run_at", "started_at", "finished_at",
        "error",
    }  # fmt: skip
    for i, s in enumerate(data["steps"]):
        assert step_keys <= set(s)
        assert s["step"] == i
        assert isinstance(s["attempts"], int)
        assert s["state"] in ("scheduled", "running", "done", "failed", "canceled")
        for key in ("run_at", "started_at", "finished_at"):
            assert ISO.match(s[key]), (key, s[key])
    st = env.status(run_id)
    assert st.state == "completed"
    assert st.steps[1].name == "reply"
    assert st.steps[1].kind == "action"


def test_status_of_a_waiting_run_has_next_wake_at(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.long_sleep, {"days": 2})
    env.advance(0)
    data = env.status(run_id).to_dict()
    assert data["state"] == "in_progress"
    assert ISO.match(data["next_wake_at"])
    wake = datetime.fromisoformat(data["next_wake_at"]).timestamp()
    assert wake == pytest.approx(env.now() + 2 * 86400)
    (s,) = data["steps"]
    assert (s["kind"], s["state"], s["finished_at"]) == ("sleep", "scheduled", None)


def test_failed_step_status_shows_error_and_attempts(env: WorkflowTestEnv) -> None:
    run_id = env.start(flows.action_default, {"key": "e"})
    env.run_until_idle()
    data = env.status(run_id).to_dict()
    assert data["state"] == "failed"
    assert isinstance(data["error"], str)
    (s,) = data["steps"]
    assert s["state"] == "failed"
    assert s["attempts"] == 1
    assert s["error"] == "RuntimeError: e is broken"


def test_list_filters_by_state_and_workflow(env: WorkflowTestEnv) -> None:
    done = env.run(flows.one_action) and env.client.list()[0].id
    waiting = env.start(flows.waits)
    env.run_until_idle()
    assert [s.id for s in env.client.list(state="in_progress")] == [waiting]
    assert [s.id for s in env.client.list(state="completed")] == [done]
    assert [s.id for s in env.client.list(workflow="one_action")] == [done]


def test_real_worker_with_fake_clock_drives_a_run(tmp_path: Path) -> None:
    from wfl import Client

    clock = FakeClock(1_800_000_000.0)
    client = Client(tmp_path, clock=clock)
    run_id = client.start(f"{GREETING}:greet", {"name": "W"})
    asyncio.run(Worker(tmp_path, clock=clock, listen=False).run(once=True))
    assert client.status(run_id).state == "in_progress"  # the reply waits two seconds
    clock.advance(2)
    asyncio.run(Worker(tmp_path, clock=clock, listen=False).run(once=True))
    assert client.wait(run_id, timeout=5).endswith("Hi back!")


# --------------------------------------------------------------------------------------------
# a flow file that stops importing


FLOW_OK = """
from wfl import Step, WorkflowManager
workflow = WorkflowManager()
def first() -> int:
    return 1
def second() -> int:
    return 2
@workflow.define
async def two(step: Step) -> int:
    a = await step.run_query(first)
    b = await step.run_query(second, run_after=60)
    return a + b
"""


def test_a_process_keeps_the_code_it_loaded_when_the_flow_file_changes(tmp_path: Path) -> None:
    # A half-saved edit (or any edit) does not reach code already loaded: the process runs
    # what it imported until it restarts, so no run ever mixes old and new code. (A worker
    # that cannot import a flow at all pauses the run: tests/test_loader_cli.py.)
    flow = tmp_path / "two.py"
    flow.write_text(FLOW_OK)
    with WorkflowTestEnv(tmp_path / "runs") as env:
        run_id = env.start(f"{flow}:two")
        env.advance(0)  # first step done, second waits 60 s
        flow.write_text(FLOW_OK.replace("return a + b", "return a +"))  # a half-saved edit
        env.advance(61)
        assert env.result(run_id) == 3


def test_cleanup_of_a_canceled_run_waits_until_a_worker_wound_it_up(
    env: WorkflowTestEnv,
) -> None:
    # on_complete has not seen the cancel yet: deleting the journal now would lose it
    run_id = env.start(flows.long_sleep, {"days": 30}, on_complete=flows.record_completion)
    env.client.cancel(run_id)
    with pytest.raises(RefusedOperation, match="on_complete pending"):
        env.client.cleanup(run_id)
    env.advance(0)
    assert env.client.cleanup(run_id) == [run_id]


def test_cancel_of_a_run_whose_flow_does_not_import_still_finishes(tmp_path: Path) -> None:
    flow = tmp_path / "two.py"
    flow.write_text(FLOW_OK)
    with WorkflowTestEnv(tmp_path / "runs") as env:
        run_id = env.start(f"{flow}:two")
        env.advance(0)
        flow.write_text("this is not python")
        env.cancel(run_id)
        st = env.status(run_id)
        assert st.state == "canceled"
        assert st.run_state is not None
        assert st.run_state.end is not None


def test_worker_holds_at_most_max_live_runs_at_once(env: WorkflowTestEnv) -> None:
    ids = [env.start(flows.three_steps) for _ in range(20)]
    live: list[int] = []
    worker = Worker(env.client.store, clock=env.clock, listen=False, max_live=4)
    worker.on_event = lambda e: live.append(len(worker.drivers)) if e.kind == "loaded" else None
    env.clock.skip = True
    try:
        asyncio.run(worker.run(stop_when_idle=True))
    finally:
        env.clock.skip = False
    assert all(env.status(r).state == "completed" for r in ids)
    assert max(live) == 4


@pytest.mark.files_only
def test_an_unexpected_error_while_writing_pauses_the_run_instead_of_hanging(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wfl import journal

    real = journal.JournalWriter._write_held  # the worker's group commit writes through it
    failures = [RuntimeError("a bug in the write path")]

    def flaky_append(self: journal.JournalWriter, payload: bytes) -> Any:
        if failures:
            raise failures.pop()
        return real(self, payload)

    monkeypatch.setattr(journal.JournalWriter, "_write_held", flaky_append)
    assert env.run(flows.three_steps) == ["s0", "s2", "s4"]
    assert failures == []
