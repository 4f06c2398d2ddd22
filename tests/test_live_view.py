"""On a terminal `wfl worker` draws a live table; off one it writes one line per event."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


class _Writes:
    """A file that keeps what each flush wrote (one write(2) to a pipe each)."""

    def __init__(self) -> None:
        self.pending = ""
        self.flushed: list[str] = []

    def write(self, text: str) -> int:
        self.pending += text
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.flushed.append(self.pending)
        self.pending = ""


def test_event_lines_are_written_together_in_whole_lines_of_at_most_a_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off a terminal the lines of LINES_AFTER seconds go out together, after it (not in
    the turn of the loop that made them): each write holds whole lines and at most
    LINES_CHUNK characters (several processes share the pipe, which keeps a write of up to
    4,096 bytes whole); the same text as one line at a time."""
    import asyncio

    from wfl import live
    from wfl.channel import WorkerEvent

    out = _Writes()
    monkeypatch.setattr(live.console, "file", out)
    view = live.WorkerView.__new__(live.WorkerView)
    live.WorkerView.__init__(view, None, live=False)  # type: ignore[arg-type]
    events = [
        WorkerEvent(
            "step_done",
            f"run{i:04d}",
            "wf",
            step=i,
            name="s" * (i % 50),
            attempt=1,
            at=1_790_000_000.0 + i / 7,
        )
        for i in range(300)
    ]

    async def main() -> int:
        for e in events:
            view.on_event(e)
        await asyncio.sleep(0)
        written = len(out.flushed)
        await asyncio.sleep(live.LINES_AFTER)  # (its timer is due after the write's)
        return written

    assert asyncio.run(main()) == 0  # nothing at once, nor at the end of the turn
    assert "".join(out.flushed) == "".join(live.log_line(e).plain + "\n" for e in events)
    assert 1 < len(out.flushed) < len(events)
    assert all(w.endswith("\n") and len(w) <= live.LINES_CHUNK for w in out.flushed)
    view.on_event(events[0])  # no loop: at once
    assert out.flushed[-1] == live.log_line(events[0]).plain + "\n"


@pytest.mark.parametrize(
    "at",
    [1765000000.0, 1765000000.9999996, 1765000000.0005, 1765000000.5, 1765000059.999,
     -0.25, 1765000000.123456789],
)  # fmt: skip
def test_plain_event_lines_match_the_rich_ones_to_the_millisecond(at: float) -> None:
    # off a terminal the worker writes plain_line (no rich); it must be the same text
    from wfl.channel import WorkerEvent
    from wfl.live import log_line, plain_line

    for event in (
        WorkerEvent("step_done", "run1", "wf", step=3, name="s", attempt=2, detail="x", at=at),
        WorkerEvent("run_finished", "run1", "wf", detail="success", at=at),
    ):
        assert plain_line(event) == log_line(event).plain + "\n"


def test_a_diagnostic_line_comes_after_the_event_lines_of_what_came_before_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """wfl's own warnings (stderr) are written at once, the event lines (stdout) LINES_AFTER
    late: the pending event lines go out first, so that a reader of both (a log file, a
    terminal) sees a step that started before the store went away above the warning."""
    import asyncio
    import logging

    from wfl import live
    from wfl.channel import WorkerEvent
    from wfl.foreground import setup_logging

    out = _Writes()
    monkeypatch.setattr(live.console, "file", out)
    view = live.WorkerView.__new__(live.WorkerView)
    live.WorkerView.__init__(view, None, live=False)  # type: ignore[arg-type]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    setup_logging(logging.INFO, view.on_log, view.write_pending)
    event = WorkerEvent("step_started", "run0001", "wf", step=1, name="s", attempt=1, at=1.5)
    seen: list[str] = []

    async def main() -> None:
        view.on_event(event)  # buffered: written LINES_AFTER later...
        seen.append("".join(out.flushed))
        logging.getLogger("wfl.channel").warning("store x is unavailable")  # ...unless this
        seen.append("".join(out.flushed))

    try:
        asyncio.run(main())
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert seen == ["", live.log_line(event).plain + "\n"]
    assert "store x is unavailable" in capsys.readouterr().err
