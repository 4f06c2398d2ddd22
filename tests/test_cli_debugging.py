"""What the real `wfl` command shows when a run fails (SPEC §11) and what a worker shows while
it works (SPEC §10): tracebacks, failed events, log lines, the live table on a terminal."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

FLOWS = Path(__file__).resolve().parent / "cli_flows"
WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"
DECLINED = FLOWS / "declined.py"
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


class Cli:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.dir = tmp / "runs"

    def __call__(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "WFL_DIR"}
        env.update(COLUMNS="250")
        return subprocess.run(
            [WFL, *map(str, args), "--dir", str(self.dir)],
            cwd=self.tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ok(self, *args: str | Path) -> str:
        r = self(*args)
        assert r.returncode == 0, f"wfl {args} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def start(self, flow: Path, *args: str) -> str:
        return self.ok("start", flow, *args).strip()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture
def declined(cli: Cli) -> str:
    """A run whose action failed twice (the retry was due at once) and then for good."""
    run_id = cli.start(DECLINED, "--arg", "order=A-7")
    cli.ok("worker", "--once")
    return run_id


def frame(line: int, function: str) -> str:
    return f'File "{DECLINED}", line {line}, in {function}'


# --------------------------------------------------------------------------------------------
# tracebacks on the command line


def test_status_shows_the_error_with_its_innermost_file_and_line(cli: Cli, declined: str) -> None:
    out = cli.ok("status", declined)
    assert "StepFailed: step 0 (charge) failed: ValueError: card declined for A-7" in out
    assert re.search(rf"^at\s+{re.escape(str(DECLINED))}:9 in _card\s*$", out, re.M), out
    assert "Traceback" not in out  # the whole traceback only when asked


def test_status_traceback_prints_every_failed_attempt(cli: Cli, declined: str) -> None:
    out = cli.ok("status", declined, "--traceback")
    first = out.index("step 0 (charge) attempt 1 failed (retried)")
    second = out.index("step 0 (charge) attempt 2 failed (final)")
    run = out.index("the run failed")
    assert first < second < run
    for start, end in ((first, second), (second, run)):
        block = out[start:end]
        assert block.count("Traceback (most recent call last):") == 1
        assert block.index(frame(13, "charge")) < block.index(frame(9, "_card"))
        assert 'raise ValueError(f"card declined for {order}")' in block
        assert block.rstrip().endswith("ValueError: card declined for A-7")
    assert frame(19, "checkout") in out[run:]


def test_show_prints_the_traceback_under_each_failure(cli: Cli, declined: str) -> None:
    out = cli.ok("show", declined)
    # two attempts, and the run's end: the last attempt's, then the workflow's own
    assert out.count("Traceback (most recent call last):") == 4
    assert out.count(frame(9, "_card")) == 3
    records = json.loads(cli.ok("show", declined, "--json"))
    fails = [r for r in records if r["t"] == "fail"]
    assert [f["tb"]["frames"][-1][:3] for f in fails] == [[str(DECLINED), 9, "_card"]] * 2


def test_status_json_has_the_traceback_on_the_step_and_the_run(cli: Cli, declined: str) -> None:
    st = json.loads(cli.ok("status", declined, "--json"))
    step_tb = st["steps"][0]["traceback"]
    assert step_tb.startswith("Traceback (most recent call last):\n")
    assert frame(9, "_card") in step_tb
    assert st["traceback"].startswith(step_tb)
    assert frame(19, "checkout") in st["traceback"]
    listed = json.loads(cli.ok("status", "--json"))
    assert "traceback" not in listed[0]  # like steps, left out of the list form


def test_run_that_fails_prints_the_traceback_then_the_one_line_error(cli: Cli) -> None:
    r = cli("run", DECLINED, "--arg", "order=B-2")
    assert r.returncode == 1
    err = r.stderr
    assert err.count("Traceback (most recent call last):") == 2  # the step's, then the run's
    assert err.index(frame(13, "charge")) < err.index(frame(9, "_card"))
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("wfl: error: run ")
    assert last.endswith("card declined for B-2")
    assert err.rindex("Traceback") < err.rindex("wfl: error:")
    assert f"{os.sep}wfl{os.sep}" not in err  # no frame of wfl's own
    assert r.stdout == ""


def test_traceback_without_a_run_is_bad_input(cli: Cli) -> None:
    r = cli("status", "--traceback")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "wfl: error: --traceback needs a RUN\n"


# --------------------------------------------------------------------------------------------
# events sent with an error


def test_send_event_with_an_error_fails_the_waiting_run(cli: Cli) -> None:
    run_id = cli.start(FLOWS / "event_wait.py")
    cli.ok("worker", "--once")
    out = cli.ok("send-event", run_id, "approved", "--error", "rejected by Ada")
    assert out == f"sent approved (as an error) to {run_id}\n"
    cli.ok("worker", "--once")
    st = json.loads(cli.ok("status", run_id, "--json"))
    assert (st["state"], st["error"]) == ("failed", "EventFailed: rejected by Ada")
    assert st["steps"][0]["error"] == "EventFailed: rejected by Ada"


def test_send_event_refuses_a_value_and_an_error_together(cli: Cli) -> None:
    run_id = cli.start(FLOWS / "event_wait.py")
    before = (cli.dir / f"{run_id}.journal").read_bytes()
    r = cli("send-event", run_id, "approved", "--value", "1", "--error", "no")
    assert (r.returncode, r.stdout) == (2, "")
    assert r.stderr == "wfl: error: give --value or --error, not both\n"
    assert (cli.dir / f"{run_id}.journal").read_bytes() == before


# --------------------------------------------------------------------------------------------
# log lines


def user_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(r" (DEBUG|INFO|WARNING) ", line)]


def test_worker_shows_log_lines_once_across_replays_with_the_run_id(cli: Cli) -> None:
    run_id = cli.start(FLOWS / "chatty.py")
    first = user_lines(cli.ok("worker", "--once"))
    assert [line.split(" ", 1)[1] for line in first] == [
        f"{run_id} chatty INFO hello Ada",
        f"{run_id} shop.payments INFO charging Ada",  # a plain logger inside a step
        f"{run_id} chatty INFO waiting for go",
    ]
    cli.ok("send-event", run_id, "go")
    second = user_lines(cli.ok("worker", "--once"))  # replays the run: nothing said again
    assert [line.split(" ", 1)[1] for line in second] == [
        f"{run_id} chatty WARNING finishing for Ada"
    ]


def test_log_level_changes_what_shows(cli: Cli) -> None:
    run_id = cli.start(FLOWS / "chatty.py")
    quiet = user_lines(cli.ok("worker", "--once", "--log-level", "warning"))
    assert quiet == []
    cli.ok("send-event", run_id, "go")
    restarted = cli.start(FLOWS / "chatty.py", "--arg", "wait=false")
    loud = user_lines(cli.ok("worker", "--once", "--log-level", "DEBUG"))
    assert any(f"{restarted} chatty DEBUG a detail" in line for line in loud)
    assert any(f"{run_id} chatty WARNING finishing" in line for line in loud)


def test_run_shows_log_lines_on_stderr(cli: Cli) -> None:
    r = cli("run", FLOWS / "chatty.py", "--arg", "wait=false")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "charged Ada\n"
    lines = user_lines(r.stderr)
    assert [line.split(" ", 2)[2] for line in lines] == [
        "chatty INFO hello Ada",
        "shop.payments INFO charging Ada",
        "chatty WARNING finishing for Ada",
    ]
    r = cli("run", FLOWS / "chatty.py", "--arg", "wait=false", "--log-level", "ERROR")
    assert user_lines(r.stderr) == []


def test_a_bad_log_level_is_bad_input(cli: Cli) -> None:
    for command in (["worker", "--once"], ["run", FLOWS / "quick.py"]):
        r = cli(*command, "--log-level", "loud")
        assert (r.returncode, r.stdout) == (2, "")
        assert r.stderr.startswith("wfl: error: --log-level must be one of DEBUG, INFO")
    assert not list(cli.dir.glob("*.journal"))  # `wfl run` started nothing


# --------------------------------------------------------------------------------------------
# the worker's live table, on a real pseudo-terminal


class Screen:
    """A `wfl worker` on a pseudo-terminal, and what it has drawn so far."""

    def __init__(self, cli: Cli) -> None:
        leader, follower = pty.openpty()
        env = {**os.environ, "COLUMNS": "160", "LINES": "50", "TERM": "xterm-256color"}
        env.pop("WFL_DIR", None)
        self.proc = subprocess.Popen(
            [WFL, "worker", "--dir", str(cli.dir)], stdout=follower, stderr=follower, env=env
        )
        os.close(follower)
        self.leader = leader
        self.text = ""

    def frame(self) -> str:
        """The latest complete drawing of the table (from its title to the counts)."""
        end = self.text.rfind("step failures")
        start = self.text.rfind("runs in progress", 0, end)
        return self.text[start:end] if start >= 0 and end >= 0 else ""

    def wait_for(self, ok: Any, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not ok(self.frame()):
            left = deadline - time.monotonic()
            assert left > 0, f"the screen never showed it; last frame:\n{self.frame()}"
            ready, _, _ = select.select([self.leader], [], [], left)
            if ready:
                try:
                    self.text += ANSI.sub("", os.read(self.leader, 65536).decode(errors="replace"))
                except OSError:
                    break
        return self.frame()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(timeout=60) == 0
        os.close(self.leader)


def row(frame: str, run_id: str) -> str:
    return next((line for line in frame.splitlines() if run_id in line), "")


def test_live_table_lists_executing_and_waiting_runs_soonest_first(cli: Cli) -> None:
    fifo = cli.tmp / "release"
    os.mkfifo(fifo)
    held = cli.start(FLOWS / "held.py", "--arg", f"fifo={fifo}")
    timer = cli.start(FLOWS / "long_timer.py")  # waits an hour after its first step
    event = cli.start(FLOWS / "event_wait.py")
    backoff = cli.start(FLOWS / "backoff.py")  # retried in 30-90 s
    screen = Screen(cli)
    try:
        frame = screen.wait_for(
            lambda f: (
                "executing" in row(f, held)
                and all("waiting" in row(f, r) for r in (timer, event, backoff))
            )
        )
        assert re.search(r"executing\s+step 0 hold\s+1\s+running", row(frame, held))
        assert re.search(r"backoff: step 0 unreachable_service .*in \d+[sm]", row(frame, backoff))
        assert re.search(r"timer: step 1 later\s+-\s+in (59|60)m", row(frame, timer))
        assert re.search(r"event 'approved'\s+-\s+on event", row(frame, event))
        order = [frame.index(r) for r in (held, backoff, timer, event)]
        assert order == sorted(order)  # executing, then the soonest wake first
        assert re.search(r"1 executing · 3 waiting · \d+ steps done · [\d.]+ steps/s", frame)
        with open(fifo, "w") as f:  # let the held step finish
            f.write("released\n")
        frame = screen.wait_for(lambda f: held not in f or "executing" not in row(f, held))
        assert re.search(r"0 executing · 3 waiting", frame)
        assert "run_finished" in screen.text
    finally:
        with contextlib.suppress(OSError):  # a step still reading the FIFO gets its end now
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        screen.close()
