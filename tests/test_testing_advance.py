"""WorkflowTestEnv.advance steps through every timer due in the interval, each at its own
time, and `wfl.testing` imports without pytest (SPEC §6, §10)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import env_flows
import flows

from wfl.testing import WorkflowTestEnv

TESTS = Path(__file__).resolve().parent


def at(iso: str | None) -> float:
    assert iso is not None
    return datetime.fromisoformat(iso).timestamp()


def test_advance_fires_each_timer_of_the_interval_at_its_own_time() -> None:
    with WorkflowTestEnv() as env:
        run_id = env.start(env_flows.three_sleeps)
        t0 = env.now()
        env.advance(0)
        assert env.status(run_id).state == "in_progress"
        env.advance(180)
        assert env.status(run_id).state == "completed"
        assert env.result(run_id) == [0, 1, 2]
        assert env.now() == t0 + 180
        sleeps = [s for s in env.status(run_id).steps if s.kind == "sleep"]
        assert [at(s.finished_at) - t0 for s in sleeps] == [60, 120, 180]


def test_advance_stops_at_the_end_of_the_interval() -> None:
    with WorkflowTestEnv() as env:
        run_id = env.start(env_flows.three_sleeps)
        t0 = env.now()
        env.advance(0)
        env.advance(150)  # the second sleep ends at 120, the third at 180
        st = env.status(run_id)
        assert st.state == "in_progress"
        assert env.now() == t0 + 150
        assert at(st.next_wake_at) == t0 + 180
        assert [s.state for s in st.steps if s.kind == "query"] == ["done", "done"]
        env.advance(30)
        assert env.result(run_id) == [0, 1, 2]


def test_advance_runs_every_retry_of_a_backoff_at_its_time() -> None:
    with WorkflowTestEnv() as env:  # backoff 2 s, 6 s, 18 s, each times a jitter in [0.5, 1.5)
        run_id = env.start(flows.retried, {"key": "k", "failures": 3, "max_attempts": 5})
        t0 = env.now()
        env.advance(0)
        assert flows.calls["k"] == 1
        env.advance(60)  # the third retry is due by 1.5 * (2 + 6 + 18) = 39 s
        assert env.result(run_id) == "k ok after 4"
        history = env.client.store.read(run_id)
        starts = [r["at"] for r in history if r["t"] == "att"]
        retry_ats = [r["retry_at"] for r in history if r["t"] == "fail"]
        assert len(starts) == 4
        assert starts[0] == t0
        assert starts[1:] == retry_ats  # each retry at the time its backoff said
        assert t0 < retry_ats[0] < retry_ats[1] < retry_ats[2] < t0 + 39


def test_wfl_testing_imports_without_pytest(tmp_path: Path) -> None:
    """Only the wfl_env fixture needs pytest: a project without it can still use the env."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["pytest"] = None  # makes `import pytest` fail, as if not installed
        sys.path.insert(0, {str(TESTS)!r})
        import wfl.testing
        from wfl.testing import WorkflowTestEnv
        import env_flows
        with WorkflowTestEnv() as env:
            print(env.run(env_flows.three_sleeps))
        print(hasattr(wfl.testing, "wfl_env"))
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["[0,", "1,", "2]", "False"]
