"""When a run fails (SPEC §11): recorded tracebacks, failed events, typed events, step defaults.

Driven in-process through wfl.testing's fake clock; every check reads the journal back from
disk (a fresh Client, a fresh Worker per drive), as a restarted worker or `wfl status` would.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import debug_flows as df
import pytest

from wfl import Client, EventFailed, WorkflowFailed
from wfl.records import FORMAT
from wfl.testing import WorkflowTestEnv
from wfl.tracebacks import MAX_BYTES, MAX_FRAMES, bound, capture, format_tb, innermost
from wfl.worker import Worker

FLOWS = str(Path(df.__file__).resolve())


@pytest.fixture
def env() -> Iterator[WorkflowTestEnv]:
    df.calls.clear()
    with WorkflowTestEnv() as e:
        yield e
    df.calls.clear()


def journal(env: WorkflowTestEnv, run_id: str, t: str | None = None) -> list[dict[str, Any]]:
    """The run's records as a fresh reader sees them on disk."""
    return [r for r in Client(env.dir).store.read(run_id) if t is None or r["t"] == t]


def fresh_worker(env: WorkflowTestEnv) -> None:
    """A new worker process would do no more than this: read the journals and drive."""
    asyncio.run(Worker(env.dir, clock=env.clock, listen=False).run(once=True))


def frames(tb: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(f[0], f[1], f[2]) for f in tb["frames"]]


def failed(env: WorkflowTestEnv, run_id: str) -> str:
    with pytest.raises(WorkflowFailed) as info:
        env.result(run_id)
    return info.value.error


# --------------------------------------------------------------------------------------------
# tracebacks


def test_failed_attempt_records_the_users_file_and_line(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.pay, {"order": "A-1"})
    env.run_until_idle()
    (fail,) = journal(env, run_id, "fail")
    assert (fail["error_type"], fail["message"]) == ("NonRetryableError", "no such order A-1")
    assert frames(fail["tb"]) == [
        (FLOWS, df.line_of("charge"), "charge"),
        (FLOWS, df.line_of("lookup"), "_lookup"),
    ]  # the engine's own frames (wfl, asyncio, the thread pool) are left out
    assert [f[3] for f in fail["tb"]["frames"]] == [
        "_lookup(order)  # line:charge",
        'raise NonRetryableError(f"no such order {order}")  # line:lookup',
    ]
    assert fail["tb"]["error"] == "NonRetryableError: no such order A-1"
    assert innermost(fail["tb"]) == [*frames(fail["tb"])[-1], fail["tb"]["frames"][-1][3]]


def test_step_and_run_json_carry_the_traceback_as_python_prints_it(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.pay, {"order": "A-2"})
    env.run_until_idle()
    status = Client(env.dir).status(run_id).to_dict()
    step_tb = status["steps"][0]["traceback"]
    assert step_tb == (
        "Traceback (most recent call last):\n"
        f'  File "{FLOWS}", line {df.line_of("charge")}, in charge\n'
        "    _lookup(order)  # line:charge\n"
        f'  File "{FLOWS}", line {df.line_of("lookup")}, in _lookup\n'
        '    raise NonRetryableError(f"no such order {order}")  # line:lookup\n'
        "NonRetryableError: no such order A-2\n"
    )
    # the run's final error: the step's traceback, then the workflow line that awaited it
    run_tb = status["traceback"]
    assert run_tb.startswith(step_tb + "\nThe above exception was the direct cause")
    assert f'File "{FLOWS}", line {df.line_of("pay")}, in pay' in run_tb
    assert run_tb.endswith(f"StepFailed: {status['error'].partition(': ')[2]}\n")


def test_a_step_that_succeeds_later_has_no_traceback_but_keeps_its_attempts(
    env: WorkflowTestEnv,
) -> None:
    run_id = env.start(df.pay_flaky, {"order": "B-1"})
    env.advance(0)
    st = Client(env.dir).status(run_id).to_dict()["steps"][0]
    assert st["state"] == "scheduled"  # waiting out the backoff
    assert f"line {df.line_of('flaky')}, in flaky_charge" in st["traceback"]
    assert st["traceback"].endswith("ConnectionError: card service down (attempt 1)\n")
    env.run_until_idle()
    assert env.result(run_id) == "charged B-1"
    st = Client(env.dir).status(run_id).to_dict()["steps"][0]
    assert (st["state"], st["error"], st["traceback"]) == ("done", None, None)
    fails = journal(env, run_id, "fail")
    assert [f["tb"]["error"] for f in fails] == [
        "ConnectionError: card service down (attempt 1)",
        "ConnectionError: card service down (attempt 2)",
    ]


def test_tracebacks_of_every_attempt_survive_a_worker_restart(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.pay_flaky_for_good, {"order": "C-1"})
    fresh_worker(env)  # attempt 1 fails; this worker ends
    env.clock.advance(3600)
    fresh_worker(env)  # a new worker replays the journal and runs attempt 2
    assert df.calls["down"] == 2
    fails = journal(env, run_id, "fail")
    assert [f["attempt"] for f in fails] == [1, 2]
    for f in fails:
        assert frames(f["tb"])[-1] == (FLOWS, df.line_of("connect"), "_connect")
    end = journal(env, run_id, "end")[-1]
    assert end["tb"]["cause"] == fails[-1]["tb"]  # the run's error, raised from the last attempt


def test_a_workflow_that_raises_outside_any_step_records_where(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.raises_itself)
    env.run_until_idle()
    assert failed(env, run_id) == "ValueError: total is negative: -1"
    (end,) = journal(env, run_id, "end")
    assert frames(end["tb"]) == [
        (FLOWS, df.line_of("raises-itself"), "raises_itself"),
        (FLOWS, df.line_of("check-total"), "_check_total"),
    ]
    assert "cause" not in end["tb"]


def test_an_on_complete_that_raises_records_its_traceback(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.quick, on_complete=df.failing_on_complete)
    env.run_until_idle()
    assert env.result(run_id) == "ok"  # the outcome stands
    (oc,) = journal(env, run_id, "oc")
    assert oc["ok"] is False
    assert frames(oc["tb"]) == [(FLOWS, df.line_of("on-complete"), "failing_on_complete")]
    state = Client(env.dir).status(run_id).run_state
    assert state is not None
    assert state.on_complete_tb == oc["tb"]


def test_a_chained_error_keeps_its_cause(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.chained)
    env.run_until_idle()
    (fail,) = journal(env, run_id, "fail")
    text = format_tb(fail["tb"])
    first, _, second = text.partition(
        "\nThe above exception was the direct cause of the following exception:\n\n"
    )
    assert first.endswith("NonRetryableError: no such order inner\n")
    assert second.endswith("RuntimeError: payment step broke\n")
    assert f"line {df.line_of('wrapped')}, in wrapped" in second
    # where it went wrong: the root cause's innermost line
    assert innermost(fail["tb"])[:2] == [FLOWS, df.line_of("lookup")]  # type: ignore[index]


def test_a_caught_step_failure_does_not_fail_the_run(env: WorkflowTestEnv) -> None:
    assert env.run(df.recovers, {"order": "D"}) == "recovered from NonRetryableError"


def test_deep_tracebacks_are_cut_in_the_middle(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.recursion, {"depth": 300})
    env.run_until_idle()
    (fail,) = journal(env, run_id, "fail")
    tb = fail["tb"]
    assert len(tb["frames"]) == MAX_FRAMES
    assert len(json.dumps(tb)) <= MAX_BYTES
    head, omitted = tb["cut"]
    assert (head, omitted) == (MAX_FRAMES // 2, 301 - MAX_FRAMES)  # 301 frames of `deep`
    # the outermost and the innermost frames are the ones kept
    assert frames(tb)[0] == (FLOWS, df.line_of("deep"), "deep")
    assert frames(tb)[-1] == (FLOWS, df.line_of("deep-bottom"), "deep")
    text = format_tb(tb)
    assert f"  [... {omitted} frames left out ...]\n" in text
    assert text.count('File "') == MAX_FRAMES


def test_the_byte_bound_holds_for_long_paths_and_messages() -> None:
    long = "/srv/" + "very-long-directory-name/" * 40 + "flow.py"
    tb = {
        "error": "ValueError: " + "m" * 5000,
        "frames": [[long, i, "f" * 500, "s" * 1000] for i in range(60)],
        "cause": {"error": "KeyError: " + "k" * 5000,
                  "frames": [[long, i, "g", "t" * 1000] for i in range(60)]},
    }  # fmt: skip
    out = bound(tb)
    assert len(json.dumps(out)) <= MAX_BYTES
    kept = len(out["frames"]) + len(out["cause"]["frames"])
    assert 2 <= kept <= MAX_FRAMES
    assert out["frames"][-1][1] == 59
    assert out["frames"][0][1] == 0
    assert out["cut"][1] == 60 - len(out["frames"])
    assert format_tb(out).count("frames left out") == 2


def test_no_secret_from_the_environment_reaches_the_journal(
    env: WorkflowTestEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cr3t-" + secrets.token_hex(16)
    monkeypatch.setenv("WFL_TEST_SECRET", secret)
    run_id = env.start(df.pay, {"order": "E-1"})
    env.run_until_idle()
    (fail,) = journal(env, run_id, "fail")
    assert fail["tb"]["frames"]  # a traceback was recorded...
    raw = Client(env.dir).store.journal_path(run_id).read_bytes()
    assert secret.encode() not in raw  # ...but no local variable's value
    assert secret not in json.dumps(Client(env.dir).status(run_id).to_dict())


def test_capture_skips_errors_with_no_user_frame() -> None:
    assert capture(RuntimeError("never raised")) is None
    try:
        raise ValueError("here")
    except ValueError as exc:
        tb = capture(exc)
    assert tb is not None
    assert frames(tb)[0][2] == "test_capture_skips_errors_with_no_user_frame"


# Format 1 as it was before tracebacks: the keys each record kind had. Tracebacks and failed
# events add keys an older reader of format 1 does not look at (and a record kind it skips),
# so the format version stays 1.
FORMAT_1_KEYS = {
    "fail": {"t", "n", "attempt", "error_type", "message", "retry_at", "at"},
    "end": {"t", "kind", "result", "error", "at"},
    "oc": {"t", "ok", "error", "at"},
}


def test_journals_stay_format_1_with_only_added_keys(env: WorkflowTestEnv) -> None:
    assert FORMAT == 1
    run_id = env.start(df.pay, {"order": "F-1"}, on_complete=df.failing_on_complete)
    env.run_until_idle()
    for r in journal(env, run_id):
        old = FORMAT_1_KEYS.get(r["t"])
        if old is not None:
            assert old <= set(r), r["t"]
            assert set(r) - old <= {"tb", "event_id"}, r["t"]
    # and without a traceback a record is what format 1 wrote, key for key
    quiet = env.start(df.quick)
    env.run_until_idle()
    (end,) = journal(env, quiet, "end")
    assert set(end) == FORMAT_1_KEYS["end"]


# --------------------------------------------------------------------------------------------
# events sent with an error, typed events


def test_an_event_sent_with_an_error_raises_event_failed(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.review)
    env.run_until_idle()
    env.send_event(run_id, "approved", error="rejected by Ada")
    assert env.result(run_id) == "rejected: rejected by Ada"
    (fail,) = journal(env, run_id, "fail")
    assert (fail["error_type"], fail["message"]) == ("EventFailed", "rejected by Ada")


def test_an_uncaught_event_failure_fails_the_run(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.review_uncaught)
    env.send_event(run_id, "approved", error="rejected by Ada")  # buffered before the wait
    env.run_until_idle()
    assert failed(env, run_id) == "EventFailed: rejected by Ada"
    (end,) = journal(env, run_id, "end")
    assert (FLOWS, df.line_of("review-uncaught"), "review_uncaught") in frames(end["tb"])


def test_event_failed_is_public_and_carries_its_message() -> None:
    exc = EventFailed("rejected by Ada", name="approved")
    assert (str(exc), exc.message, exc.name) == ("rejected by Ada", "rejected by Ada", "approved")


def test_send_event_refuses_a_value_with_an_error(env: WorkflowTestEnv) -> None:
    from wfl.errors import InvalidArguments

    run_id = env.start(df.review)
    with pytest.raises(InvalidArguments, match="a value or an error"):
        env.client.send_event(run_id, "approved", 1, error="no")
    with pytest.raises(InvalidArguments, match="non-empty message"):
        env.client.send_event(run_id, "approved", error="  ")


def test_a_typed_event_is_coerced_live_and_on_replay(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.typed_event)
    env.run_until_idle()
    env.send_event(run_id, "count", "42")  # a string, as a CLI --value '"42"' gives
    env.run_until_idle()  # the sleep makes a fresh worker replay the event step
    assert env.result(run_id) == [42, "int"]
    done = [r for r in journal(env, run_id, "done") if r.get("event_id")]
    assert done[0]["result"] == "42"  # recorded as sent


def test_a_typed_event_may_be_a_type_msgpack_cannot_hold(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.typed_when)
    env.send_event(run_id, "when", "2026-01-02T03:04:05+00:00")
    env.run_until_idle()
    assert env.result(run_id) == "datetime 2026-01-02T03:04:05+00:00"


def test_a_badly_typed_event_fails_that_step_clearly(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.typed_event)
    env.send_event(run_id, "count", "many")
    env.run_until_idle()
    error = failed(env, run_id)
    assert error.startswith(
        "StepFailed: step 0 (event:count) failed: InvalidArguments: "
        "value of event 'count' must be int: got 'many'"
    )


def test_a_badly_typed_event_is_consumed(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.typed_event_caught)
    env.send_event(run_id, "count", "many")
    env.send_event(run_id, "count", 7)
    assert env.result(run_id).endswith("got 'many' (input should be a valid integer, unable to "
                                       "parse string as an integer) | then 7")  # fmt: skip


# --------------------------------------------------------------------------------------------
# step.with_options


def test_with_options_gives_defaults_and_a_calls_own_option_wins(env: WorkflowTestEnv) -> None:
    assert env.run(df.with_defaults, {"order": "G"}) == ["charged G", "NonRetryableError"]
    steps = Client(env.dir).status(env.client.list()[0].id).to_dict()["steps"]
    assert [s["attempts"] for s in steps] == [3, 1]
    sched = list(journal(env, env.client.list()[0].id, "sched"))
    assert sched[0]["retry"]["max_attempts"] == 3
    assert "retry" not in sched[1]  # retry=False on the call beat the default


def test_with_options_unstable_args_is_recorded_and_honoured(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.unstable_defaults)
    env.advance(0)
    (read,) = [r for r in journal(env, run_id, "sched") if r["name"] == "read"]
    assert read.get("unstable") is True
    df.calls["nonce"] += 1  # the replay calls "read" with other args: allowed, as asked
    env.run_until_idle()
    assert env.result(run_id) == "done"


def test_with_options_refuses_options_that_are_no_defaults(env: WorkflowTestEnv) -> None:
    from wfl.step import Step

    step = Step.__new__(Step)
    step._defaults = {}
    with pytest.raises(TypeError, match="with_options\\(\\) takes retry, timeout, unstable_args"):
        step.with_options(name="x")


def test_a_failed_child_run_gives_its_traceback_to_the_parents_step(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.parent_of_failure)
    env.run_until_idle()
    (fail,) = journal(env, run_id, "fail")
    assert fail["error_type"] == "StepFailed"
    assert innermost(fail["tb"])[:3] == [FLOWS, df.line_of("lookup"), "_lookup"]  # type: ignore[index]
    assert f"line {df.line_of('pay')}, in pay" in format_tb(fail["tb"])  # the child's workflow


def test_workflow_failed_carries_the_runs_traceback(env: WorkflowTestEnv) -> None:
    run_id = env.start(df.raises_itself)
    env.run_until_idle()
    with pytest.raises(WorkflowFailed) as info:
        Client(env.dir).wait(run_id, timeout=5)
    assert info.value.traceback is not None
    assert info.value.traceback.endswith("ValueError: total is negative: -1\n")
    assert f"line {df.line_of('check-total')}, in _check_total" in info.value.traceback


# --------------------------------------------------------------------------------------------
# what the worker's live table is fed


def test_the_worker_notes_what_runs_it_does_not_hold_wait_for(env: WorkflowTestEnv) -> None:
    from rich.console import Console

    from wfl.live import WorkerView

    waiting = env.start(df.review)  # will wait for an event
    sleeping = env.start(df.typed_event)  # will wait for an event, then sleep
    env.run_until_idle()
    env.send_event(sleeping, "count", 3)  # now asleep for 60 s
    worker = Worker(env.dir, clock=env.clock, listen=False)
    asyncio.run(worker.run(once=True))
    # known from the index alone: what they wait for is looked up by the view when shown
    assert worker.waits[waiting] == ("review", None, None)
    workflow, what, wake = worker.waits[sleeping]
    assert (workflow, what, wake) == ("typed_event", None, pytest.approx(env.now() + 60, abs=1))
    screen = Console(record=True, width=200)
    screen.print(WorkerView(worker, live=False).render())
    lines = screen.export_text().splitlines()
    rows = [line for line in lines if sleeping in line or waiting in line]
    assert sleeping in rows[0]  # the soonest wake first, the event-only wait last
    assert "timer: step 1 sleep" in rows[0]
    assert "in 60s" in rows[0] or "in 1m" in rows[0]
    assert "event 'approved'" in rows[1]
    assert "on event" in rows[1]
    assert any("0 executing · 2 waiting" in line for line in lines)
    # another worker finishes both: this one drops them when it next looks
    env.send_event(waiting, "approved", True)
    env.run_until_idle()
    assert worker._open_driver(sleeping) is None  # as when its timer fires: the run is over
    assert sleeping not in worker.waits
    worker.scan()
    assert worker.waits == {}
