"""CLI output of unusual but valid journal values (issue 14), through the real `wfl`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"max_parallelism": 64, "processes": None, "grace": 10.0, "once": False}),
        (
            ["--processes=3", "--once", "--grace", "2.5"],
            {"processes": 3, "once": True, "grace": 2.5},
        ),
        (["--max-parallelism", "0"], None),  # typer's min=1 explains it
        (["--processes", "+2"], None),
        (["--processes", "٣"], None),  # not ASCII digits: typer decides
        (["--grace", "-1"], None),
        (["--grace", "1e3"], None),
        (["--help"], None),
        (["--processes", "2", "--processes", "3"], None),
        (["extra"], None),
    ],
)
def test_worker_fast_path_takes_only_plainly_valid_options(
    argv: list[str], expected: dict[str, object] | None
) -> None:
    from wfl.entry import _parse
    from wfl.workercmd import fast_options

    found = _parse("worker", argv)
    options = fast_options(found) if found is not None else None
    if expected is None:
        assert options is None
    else:
        assert options is not None
        assert {k: options[k] for k in expected} == expected
