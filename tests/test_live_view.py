"""On a terminal `wfl worker` draws a live table; off one it writes one line per event."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

FLOWS = Path(__file__).resolve().parent / "cli_flows"
WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"


def start(directory: Path) -> str:
    done = subprocess.run(
        [WFL, "start", str(FLOWS / "wide_steps.py"), "--dir", str(directory)],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def test_worker_on_a_terminal_draws_the_live_table(tmp_path: Path) -> None:
    start(tmp_path)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "140", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [WFL, "worker", "--once", "--dir", str(tmp_path)],
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    screen = b"".join(chunks).decode(errors="replace")
    assert "runs in progress" in screen
    assert "steps done" in screen
    assert "wide_steps" in screen
    assert "run_finished" in screen  # the recent-events panel


def test_worker_off_a_terminal_logs_one_line_per_event(tmp_path: Path) -> None:
    run_id = start(tmp_path)
    done = subprocess.run(
        [WFL, "worker", "--once", "--dir", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0
    lines = done.stdout.strip().splitlines()
    assert all(run_id in line for line in lines)
    assert sum("step_done" in line for line in lines) == 5
    assert lines[-1].endswith("run_finished success")
    assert "runs in progress" not in done.stdout


def test_ctrl_c_ends_status_watch_quietly(tmp_path: Path) -> None:
    import signal

    run_id = start(tmp_path)  # no worker: it stays in progress, so --watch keeps going
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "140", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [WFL, "status", run_id, "--watch", "--dir", str(tmp_path)],
        stdout=follower,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    os.close(follower)
    seen = b""
    while run_id.encode() not in seen:  # it has drawn the run at least once
        seen += os.read(leader, 65536)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    os.close(leader)
    assert proc.returncode == 0
    assert err == ""
