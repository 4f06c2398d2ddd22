"""wfl.testing: WorkflowTestEnv and the `wfl_env` pytest fixture (SPEC §6)."""

from __future__ import annotations

import time
from pathlib import Path

import flows
import pytest

from wfl import WorkflowCanceled, WorkflowFailed
from wfl.testing import WorkflowTestEnv

pytest_plugins = ["pytester"]


def test_spec_example_reminder_and_approval() -> None:
    with WorkflowTestEnv() as env:
        started = time.perf_counter()
        assert env.run(flows.reminder, {"days": 30}) == "reminded"
        assert time.perf_counter() - started < 1.0
        assert flows.calls["reminder"] == 1
        run_id = env.start(flows.approval, {"doc": "x"})
        env.run_until_idle()
        assert env.status(run_id).state == "in_progress"  # waits for the event
        env.send_event(run_id, "approved", True)
        assert env.status(run_id).state == "in_progress"  # now sleeps half an hour
        assert flows.calls["publish"] == 0
        env.advance(3600)
        assert env.status(run_id).state == "completed"
        assert env.result(run_id) == "published x"
        assert flows.calls["publish"] == 1


def test_wfl_env_fixture_yields_a_working_env(wfl_env: WorkflowTestEnv) -> None:
    assert isinstance(wfl_env, WorkflowTestEnv)
    assert wfl_env.dir.is_dir()
    assert wfl_env.run(flows.reminder, {"days": 2}) == "reminded"
    assert wfl_env.client.list()[0].workflow == "reminder"


def test_wfl_env_fixture_gives_each_test_its_own_directory(
    wfl_env: WorkflowTestEnv, tmp_path: Path
) -> None:
    assert wfl_env.client.list() == []
    assert wfl_env.dir != tmp_path


def test_wfl_env_fixture_is_registered_as_a_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_uses_fixture="""
        from wfl.testing import WorkflowTestEnv

        def test_it(wfl_env):
            assert isinstance(wfl_env, WorkflowTestEnv)
            assert wfl_env.dir.is_dir()
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_env_removes_its_temporary_directory() -> None:
    with WorkflowTestEnv() as env:
        env.run(flows.echo, {"value": 1})
        directory = env.dir
        assert any(directory.iterdir())
    assert not directory.exists()


def test_env_with_a_given_directory_keeps_it(tmp_path: Path) -> None:
    with WorkflowTestEnv(tmp_path / "runs") as env:
        assert env.run(flows.echo, {"value": [1, "a"]}) == [1, "a"]
    assert list((tmp_path / "runs").glob("*.journal"))


def test_now_is_the_fake_clock_and_moves_only_when_told() -> None:
    with WorkflowTestEnv(start=1_000_000.0) as env:
        assert env.now() == 1_000_000.0
        env.advance(90)
        assert env.now() == 1_000_090.0
        env.run(flows.long_sleep, {"days": 1})
        assert env.now() == pytest.approx(1_000_090.0 + 86400)


def test_run_until_idle_stops_at_a_run_waiting_for_an_event() -> None:
    with WorkflowTestEnv() as env:
        run_id = env.start(flows.waits)
        before = env.now()
        env.run_until_idle()
        assert env.status(run_id).state == "in_progress"
        assert env.now() == before  # nothing to skip to
        with pytest.raises(RuntimeError, match="has not finished"):
            env.result(run_id)


def test_result_raises_workflow_failed_and_canceled() -> None:
    with WorkflowTestEnv() as env:
        failed = env.start(flows.action_default, {"key": "x"})
        env.run_until_idle()
        with pytest.raises(WorkflowFailed, match="x is broken"):
            env.result(failed)
        canceled = env.start(flows.waits)
        env.run_until_idle()
        env.cancel(canceled)
        with pytest.raises(WorkflowCanceled):
            env.result(canceled)


def test_run_raises_for_a_failing_workflow() -> None:
    with WorkflowTestEnv() as env, pytest.raises(WorkflowFailed, match="RuntimeError"):
        env.run(flows.action_default, {"key": "y"})


def test_advance_runs_only_what_became_due() -> None:
    with WorkflowTestEnv() as env:
        run_id = env.start(flows.reminder, {"days": 1})
        env.advance(0)
        env.advance(86400 - 1)
        assert flows.calls["reminder"] == 0
        env.advance(1)
        assert flows.calls["reminder"] == 1
        assert env.result(run_id) == "reminded"
