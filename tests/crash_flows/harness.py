"""Helpers for tests that run real `wfl` processes and kill them: worker processes, bounded
waits, side-effect log parsing, and the accounting that compares logs with journals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wfl import journal
from wfl.state import RunState

HERE = Path(__file__).resolve().parent
CHAOS = str(HERE / "chaos.py")


def wfl_command() -> list[str]:
    script = Path(sys.executable).parent / "wfl"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from wfl.cli import main; main()"]


def wfl(*args: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    """Run one `wfl` command to its end."""
    done = subprocess.run(
        [*wfl_command(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"wfl {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done


def spawn_wfl(*args: str) -> subprocess.Popen[str]:
    """Start one `wfl` command without waiting for it."""
    return subprocess.Popen(
        [*wfl_command(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


class WorkerProc:
    """One `wfl worker --dir DIR` process; its output goes to a file for post-mortems."""

    count = 0

    def __init__(self, directory: Path, *extra: str) -> None:
        WorkerProc.count += 1
        self.out_path = directory.parent / f"worker-{os.getpid()}-{WorkerProc.count}.out"
        self._out = open(self.out_path, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            [*wfl_command(), "worker", "--dir", str(directory), *extra],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.wait()

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None:
                self._out.close()

    def output(self) -> str:
        try:
            return self.out_path.read_text()
        except OSError:
            return ""


def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.005) -> None:
    """Poll `cond` until true; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def worker_listening(directory: Path, n: int = 1) -> Callable[[], bool]:
    """True once `n` workers have bound their wake-up sockets in `directory`."""

    def check() -> bool:
        try:
            return len(os.listdir(directory / "workers")) >= n
        except FileNotFoundError:
            return False

    return check


# -- side-effect logs -------------------------------------------------------------------------


def log_lines(path: Path) -> list[str]:
    try:
        data = path.read_text()
    except FileNotFoundError:
        return []
    return [line for line in data.split("\n") if line]


def line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def executions(path: Path) -> Counter[tuple[str, int, int]]:
    """(run_id, step, attempt) -> how many times that attempt's side effect happened."""
    found: Counter[tuple[str, int, int]] = Counter()
    for line in log_lines(path):
        run_id, step, attempt, _tag = line.split(" ", 3)
        found[(run_id, int(step), int(attempt))] += 1
    return found


def oc_calls(path: Path) -> Counter[str]:
    return Counter(line.split(" ", 1)[0] for line in log_lines(path))


# -- journals ---------------------------------------------------------------------------------


def journals(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """Every run's records; raises JournalCorrupt if any journal is damaged."""
    out = {}
    for path in sorted(directory.glob("*.journal")):
        out[path.name[: -len(".journal")]] = journal.read(path).records
    return out


def state_of(directory: Path, run_id: str) -> RunState:
    return RunState.from_records(journal.read(directory / f"{run_id}.journal").records)


def settled(directory: Path, run_id: str) -> bool:
    """The run ended and its on_complete (if any) is recorded."""
    try:
        st = state_of(directory, run_id)
    except FileNotFoundError:
        return False
    return st.end is not None and (st.on_complete is None or st.on_complete_ran)


@dataclass
class Accounting:
    runs: int = 0
    steps: int = 0  # executed steps (query/mutation/action) checked
    executions: int = 0
    attempts: int = 0
    unexecuted_attempts: int = 0  # recorded, but killed before the side effect happened
    interrupted: int = 0  # attempts the journal marks as cut off by a crash
    duplicates: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.runs} runs, {self.steps} steps checked, {self.attempts} recorded attempts, "
            f"{self.executions} executions, {self.unexecuted_attempts} attempts cut off before "
            f"their side effect, {self.interrupted} interrupted, {self.duplicates} duplicates"
        )


def account(directory: Path, log: Path, run_ids: list[str] | None = None) -> Accounting:
    """Compare the side-effect log with the journals: every execution of a step is one
    recorded attempt (no attempt executed twice, none executed unrecorded), an attempt
    recorded as done or as a genuine failure executed exactly once, and nothing ran after a
    step's `done`."""
    acc = Accounting()
    runs = journals(directory)
    execs = executions(log)
    wanted = set(run_ids) if run_ids is not None else set(runs)
    by_run: dict[str, Counter[tuple[int, int]]] = defaultdict(Counter)
    for (run_id, n, attempt), times in execs.items():
        if run_id not in wanted:
            continue
        if run_id not in runs:
            acc.problems.append(f"{run_id}: executions logged for a run with no journal")
            continue
        by_run[run_id][(n, attempt)] += times
    for run_id in sorted(wanted):
        records = runs.get(run_id)
        if records is None:
            acc.problems.append(f"{run_id}: no journal")
            continue
        acc.runs += 1
        _account_run(acc, run_id, records, by_run[run_id])
    return acc


def _account_run(
    acc: Accounting, run_id: str, records: list[dict[str, Any]], ran: Counter[tuple[int, int]]
) -> None:
    kinds: dict[int, str] = {}
    atts: dict[int, list[int]] = defaultdict(list)
    done_at: dict[int, int] = {}  # step -> attempt recorded done
    outcome: dict[tuple[int, int], str] = {}  # (step, attempt) -> done | fail | Interrupted
    for r in records:
        t = r["t"]
        if t == "restart":
            raise AssertionError("accounting does not handle restarted runs")
        if t == "sched":
            kinds[r["n"]] = r["kind"]
        elif t == "att" and kinds.get(r["n"]) in ("query", "mutation", "action"):
            n = r["n"]
            if n in done_at:
                acc.problems.append(f"{run_id} step {n}: attempt {r['attempt']} after its done")
            atts[n].append(r["attempt"])
        elif t == "done" and r["n"] in atts:
            done_at[r["n"]] = r["attempt"]
            outcome[(r["n"], r["attempt"])] = "done"
        elif t == "fail" and r["n"] in atts:
            interrupted = r["error_type"] == "Interrupted"
            outcome[(r["n"], r["attempt"])] = "Interrupted" if interrupted else "fail"
    for n, attempts in sorted(atts.items()):
        acc.steps += 1
        acc.attempts += len(attempts)
        if len(set(attempts)) != len(attempts):
            acc.problems.append(f"{run_id} step {n}: attempt numbers repeat: {attempts}")
        for attempt in attempts:
            times = ran.get((n, attempt), 0)
            acc.executions += times
            if times > 1:
                acc.duplicates += times - 1
                acc.problems.append(f"{run_id} step {n} attempt {attempt} executed {times} times")
            what = outcome.get((n, attempt))
            if what == "Interrupted":
                acc.interrupted += 1
            if what in ("done", "fail") and times != 1:
                acc.problems.append(
                    f"{run_id} step {n} attempt {attempt} is recorded {what} but executed "
                    f"{times} times"
                )
            if times == 0:
                acc.unexecuted_attempts += 1
    for (n, attempt), times in sorted(ran.items()):
        if attempt not in atts.get(n, []):
            acc.duplicates += times
            acc.problems.append(
                f"{run_id} step {n} attempt {attempt} executed {times} times but the journal "
                f"records no such attempt (attempts: {atts.get(n, [])})"
            )
        elif n in done_at and attempt > done_at[n]:
            acc.duplicates += times
            acc.problems.append(f"{run_id} step {n} ran again (attempt {attempt}) after done")
