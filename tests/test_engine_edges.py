"""Engine edge cases found in review (issue 14), each reproduced here before it was fixed."""

from __future__ import annotations

import math
from collections.abc import Iterator

import edge_flows
import flows
import pytest

from wfl import WorkflowFailed, journal, records
from wfl.testing import WorkflowTestEnv


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
