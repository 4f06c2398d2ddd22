"""CLI output of unusual but valid journal values (issue 14), through the real `wfl`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"
FLOWS = Path(__file__).resolve().parent / "cli_flows"


def wfl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WFL_DIR"}
    env.update(COLUMNS="200", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [WFL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_bytes_dict_keys_in_a_result_print_everywhere(tmp_path: Path) -> None:
    ran = wfl("run", str(FLOWS / "bytes_keys.py"), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert "Traceback" not in ran.stderr
    assert json.loads(ran.stdout) == {"b'raw'": 1, "text": {"b'inner'": "b'v'"}}
    run_id = wfl("status", "--json", cwd=tmp_path)
    assert run_id.returncode == 0, run_id.stderr
    (listed,) = json.loads(run_id.stdout)
    assert listed["result"]["b'raw'"] == 1
    run = listed["id"]
    shows_result = [
        ["status", run],
        ["status", run, "--json"],
        ["show", run, "--json"],
        ["show", run],
    ]
    for args in [*shows_result, ["status"]]:
        shown = wfl(*args, cwd=tmp_path)
        assert shown.returncode == 0, (args, shown.stderr)
        assert "Traceback" not in shown.stderr
        assert args not in shows_result or "raw" in shown.stdout, args
