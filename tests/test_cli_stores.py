"""The command line on both stores (SPEC §3, §7): the same commands, --json keys and exit
codes whether --store names a directory or a PostgreSQL database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FLOWS = Path(__file__).resolve().parent / "cli_flows"
WFL = str(Path(sys.executable).parent / "wfl")


def wfl(*args: str, store: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WFL_DIR", "WFL_STORE")}
    env["WFL_STORE"] = store  # the flag's place is taken by the environment: both are tested
    return subprocess.run([WFL, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)  # fmt: skip


@pytest.mark.slow
def test_a_run_through_every_command_on_both_stores(store_spec: str, tmp_path: Path) -> None:
    flow = str(FLOWS / "event_wait.py")
    started = wfl("start", flow, store=store_spec, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    listed = json.loads(wfl("status", "--json", store=store_spec, cwd=tmp_path).stdout)
    assert [r["id"] for r in listed] == [run_id]
    assert wfl("worker", "--once", store=store_spec, cwd=tmp_path).returncode == 0
    why = wfl("status", run_id[:6], "--why", store=store_spec, cwd=tmp_path)
    assert "event 'approved'" in why.stdout
    sent = wfl("send-event", run_id[:6], "approved", "--value", '"yes"', store=store_spec,
               cwd=tmp_path)  # fmt: skip
    assert sent.stdout == f"sent approved to {run_id}\n"
    assert wfl("worker", "--once", store=store_spec, cwd=tmp_path).returncode == 0
    st = json.loads(wfl("status", run_id, "--json", store=store_spec, cwd=tmp_path).stdout)
    assert (st["state"], st["result"]) == ("completed", {"approved": "yes"})
    assert [s["state"] for s in st["steps"]] == ["done", "done"]
    shown = json.loads(wfl("show", run_id, "--json", store=store_spec, cwd=tmp_path).stdout)
    assert [r["t"] for r in shown][:2] == ["run", "sched"]
    refused = wfl("cancel", run_id, store=store_spec, cwd=tmp_path)
    assert refused.returncode == 2
    assert "already completed" in refused.stderr
    restarted = wfl("restart", run_id, "--from", "1", store=store_spec, cwd=tmp_path)
    assert restarted.stdout == f"restarted {run_id} from step 1\n"
    assert wfl("worker", "--once", store=store_spec, cwd=tmp_path).returncode == 0
    cleaned = wfl("cleanup", "--finished", store=store_spec, cwd=tmp_path)
    assert cleaned.stdout == "deleted 1 run\n"
    assert json.loads(wfl("status", "--json", store=store_spec, cwd=tmp_path).stdout) == []
    unknown = wfl("status", "zzzz", store=store_spec, cwd=tmp_path)
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1
