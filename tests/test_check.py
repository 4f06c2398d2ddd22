"""`wfl check`: a run is broken not only by a determinism violation but by any replay that
cannot reach the end of its recorded history (issue 12 item 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"

FLOW = """\
from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def prepare(doc: str) -> dict:
    return {"doc": doc}


def publish(doc: str) -> str:
    return "published " + doc


@workflow.define
async def approval(step: Step, doc: str) -> str:
    y = await step.run_action(prepare, {"doc": doc})
    # EDIT
    approved = await step.await_event("go")
    return await step.run_action(publish, {"doc": y["doc"]}) if approved else "no"
"""


def wfl(tmp: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WFL_DIR"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [WFL, *map(str, args), "--dir", str(tmp / "runs")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp,
        env=env,
    )


@pytest.fixture
def waiting(tmp_path: Path) -> tuple[Path, Path, str]:
    """A run of FLOW with its action recorded, now waiting for the event "go"."""
    flow = tmp_path / "approval.py"
    flow.write_text(FLOW)
    start = wfl(tmp_path, "start", flow, "--arg", "doc=contract")
    assert start.returncode == 0, start.stderr
    run_id = start.stdout.strip()
    drive = wfl(tmp_path, "worker", "--once")
    assert drive.returncode == 0, drive.stderr
    return tmp_path, flow, run_id


def edit(flow: Path, line: str) -> int:
    """Put `line` where FLOW says # EDIT; returns its line number."""
    flow.write_text(FLOW.replace("    # EDIT", "    " + line))
    return FLOW.splitlines().index("    # EDIT") + 1


def journals(tmp: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (tmp / "runs").glob("*.journal")}


def test_unchanged_code_replays_to_the_end_of_the_history(
    waiting: tuple[Path, Path, str],
) -> None:
    tmp, flow, run_id = waiting
    r = wfl(tmp, "check", flow)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok   {run_id}" in r.stdout
    assert "2 of 2 recorded steps match" in r.stdout


def test_an_exception_before_a_recorded_step_breaks_the_run(
    waiting: tuple[Path, Path, str],
) -> None:
    tmp, flow, run_id = waiting
    line = edit(flow, "y.bogus()")
    before = journals(tmp)
    r = wfl(tmp, "check", flow)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr == ""
    assert f"FAIL {run_id}" in r.stdout
    assert "AttributeError" in r.stdout
    assert f"approval.py:{line}" in r.stdout
    assert "before recorded step 1" in r.stdout
    assert "1 would break" in r.stdout
    (report,) = json.loads(wfl(tmp, "check", flow, "--json").stdout)
    assert report["ok"] is False
    assert report["replayed"] == 1
    assert journals(tmp) == before  # a check writes nothing


def test_a_return_before_a_recorded_step_breaks_the_run(waiting: tuple[Path, Path, str]) -> None:
    tmp, flow, run_id = waiting
    line = edit(flow, 'return "early"')
    r = wfl(tmp, "check", flow)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"FAIL {run_id}" in r.stdout
    assert "returns before recorded step 1 (event:go)" in r.stdout
    assert f"approval.py:{line}" in r.stdout


def test_a_change_after_the_recorded_history_does_not_break_the_run(
    waiting: tuple[Path, Path, str],
) -> None:
    tmp, flow, _ = waiting
    flow.write_text(FLOW.replace('else "no"', 'else "rejected"'))
    r = wfl(tmp, "check", flow)
    assert r.returncode == 0, r.stdout + r.stderr
