"""on_complete is called at least once, every started call is in the journal, and the call's
idempotency key is the same on every call (SPEC §2), with a real SIGKILL inside the call."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from crash_flows.harness import WorkerProc, wait_for, wfl_command

from wfl import journal

FLOWS = Path(__file__).resolve().parent / "cli_flows"


def run_wfl(*args: str) -> str:
    done = subprocess.run([*wfl_command(), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_on_complete_killed_mid_call_is_called_again_with_the_same_key(tmp_path: Path) -> None:
    runs, log = tmp_path / "runs", tmp_path / "oc.log"
    flow = str(FLOWS / "oc_key.py")
    run_id = run_wfl(
        "start", f"{flow}:quick", "--on-complete", f"{flow}:notify",
        "--context", json.dumps({"log": str(log)}), "--dir", str(runs),
    ).strip()  # fmt: skip

    worker = WorkerProc(runs)
    try:
        wait_for(lambda: log.exists() and log.read_text().count("\n") == 1, 60, "the first call")
    finally:
        worker.kill()  # SIGKILL, inside on_complete

    run_wfl("worker", "--once", "--dir", str(runs))
    calls = [line.split() for line in log.read_text().splitlines()]
    assert [c[1:] for c in calls] == [["1", "success"], ["2", "success"]]
    assert calls[0][0] == calls[1][0]  # the same idempotency key on both calls
    assert run_id in calls[0][0]

    kinds = [r["t"] for r in journal.read(runs / f"{run_id}.journal").records]
    assert kinds.count("ocs") == 2  # both started calls are recorded...
    assert kinds.count("oc") == 1  # ...and the one that returned
    assert kinds.index("ocs") < kinds.index("oc")

    shown = run_wfl("show", run_id, "--dir", str(runs))
    assert "on_complete call 2 started" in shown
    status = run_wfl("status", run_id, "--dir", str(runs))
    assert "called 2 times" in status
