"""Helpers for tests that run real `wfl` processes and kill them: worker processes, bounded
waits, side-effect log parsing, and the accounting that compares logs with journals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wfl import pool
from wfl.errors import RunNotFound
from wfl.state import RunState
from wfl.stores import open_store
from wfl.stores.base import Store

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


def is_url(where: Path | str) -> bool:
    return str(where).startswith("postgresql://")


_stores: dict[str, Store] = {}


def store_at(where: Path | str) -> Store:
    """One store object per spec for the test's own reads (a directory, or a URL)."""
    spec = str(where)
    if spec not in _stores:
        _stores[spec] = open_store(spec)
    return _stores[spec]


def _one_process(extra: tuple[str, ...]) -> tuple[str, ...]:
    return extra if "--processes" in extra else ("--processes", "1", *extra)


class WorkerProc:
    """One `wfl worker --store STORE` process; its output goes to a file for post-mortems
    (beside the directory, or in `out_dir` for a PostgreSQL store)."""

    count = 0

    def __init__(self, where: Path | str, *extra: str, out_dir: Path | None = None) -> None:
        WorkerProc.count += 1
        folder = out_dir or Path(where).parent
        self.out_path = folder / f"worker-{os.getpid()}-{WorkerProc.count}.out"
        self._out = open(self.out_path, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            # one process unless asked: these tests kill "the worker" and look at its locks
            [*wfl_command(), "worker", "--store", str(where), *_one_process(extra)],
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


def worker_listening(where: Path | str, n: int = 1) -> Callable[[], bool]:
    """True once `n` workers listen for news: their wake-up sockets bound in a directory,
    or their LISTEN connections open on PostgreSQL."""

    def check() -> bool:
        if is_url(where):
            return len(pg_workers(str(where))) >= n
        try:
            return len(os.listdir(Path(where) / "workers")) >= n
        except FileNotFoundError:
            return False

    return check


@contextmanager
def serving_with_pool(directory: Path) -> Iterator[WorkerProc]:
    """A `wfl worker` process serving the journal directory `directory` (made), listening,
    with its pool of journal files full (wfl/pool.py); killed at the end."""
    open_store(str(directory)).ensure()
    worker = WorkerProc(directory)
    try:
        wait_for(worker_listening(directory), 10.0, "the worker to listen")
        folder = directory / pool.POOL

        def full() -> bool:
            names = os.listdir(folder) if folder.is_dir() else []
            return len([n for n in names if not n.startswith(".")]) == pool.SIZE

        wait_for(full, 10.0, "the pool")
        yield worker
    finally:
        worker.kill()


def pg_workers(url: str) -> list[int]:
    """Backend pids of the workers' LISTEN connections on the database of `url`."""
    import psycopg

    from wfl.stores.postgres import WORKER_APP

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()",
            (WORKER_APP,),
        ).fetchall()
    return [r[0] for r in rows]


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


def journals(where: Path | str) -> dict[str, list[dict[str, Any]]]:
    """Every run's records; raises JournalCorrupt if any journal is damaged."""
    store = store_at(where)
    return {run_id: store.read(run_id) for run_id in sorted(store.run_ids())}


def state_of(where: Path | str, run_id: str) -> RunState:
    return RunState.from_records(store_at(where).read(run_id))


def settled(where: Path | str, run_id: str) -> bool:
    """The run ended and its on_complete (if any) is recorded."""
    try:
        st = state_of(where, run_id)
    except (FileNotFoundError, RunNotFound):
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


def account(where: Path | str, log: Path, run_ids: list[str] | None = None) -> Accounting:
    """Compare the side-effect log with the journals: every execution of a step is one
    recorded attempt (no attempt executed twice, none executed unrecorded), an attempt
    recorded as done or as a genuine failure executed exactly once, and nothing ran after a
    step's `done`."""
    acc = Accounting()
    runs = journals(where)
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
        # A query is not written ahead (it changes nothing): a worker killed before its
        # records were durable leaves no trace of it, and the query runs again under the
        # same attempt number. So a query's attempt may have executed more than once.
        query = kinds.get(n) == "query"
        for attempt in attempts:
            times = ran.get((n, attempt), 0)
            acc.executions += times
            if query:
                if outcome.get((n, attempt)) == "done" and times < 1:
                    acc.problems.append(f"{run_id} query {n} attempt {attempt}: done, never ran")
                continue
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
        if kinds.get(n) == "query" and (n not in done_at or attempt <= done_at[n]):
            continue  # (see above: unrecorded query executions are allowed)
        if attempt not in atts.get(n, []):
            acc.duplicates += times
            acc.problems.append(
                f"{run_id} step {n} attempt {attempt} executed {times} times but the journal "
                f"records no such attempt (attempts: {atts.get(n, [])})"
            )
        elif n in done_at and attempt > done_at[n]:
            acc.duplicates += times
            acc.problems.append(f"{run_id} step {n} ran again (attempt {attempt}) after done")
