#!/usr/bin/env python3
"""Timers measured from outside (issue 16): one idle `wfl worker` process, runs started by
this (another) process, lateness read back from the journals.

    python bench/timers.py '{"sittings": 3, "reps": 10, ...}'

prints progress on stderr and one line `RESULT {json}` on stdout. For each case a run's
lateness is the step body's `time.time()` minus the `run_at` the journal recorded for it
(for `step.sleep(D)` followed by a step: that step's body minus the sleep's `run_at`), so it
covers everything between the due time and user code: the worker's wake-up, loading an
evicted run (journal read, flow import, replay), the attempt record's fsync, the hop to the
step thread. Pick-up: a run whose first step is due at once, started by Client.start here;
latency = its body's `time.time()` minus `time.time()` just before the start call
("pickup"), of which "pickup_start" is the start call itself (the journal's creation and
fsyncs, in this process). "floor": how late this (the bench's) process wakes from its own
sleeps at the same minutes, mid-way through the gaps between runs: what any thread woken by a
timer gets from the machine at that load, the part of a timer's lateness no worker can remove.

The worker is whatever `import wfl` gives this interpreter, so run.py measures an older
commit by putting a git worktree of it first on PYTHONPATH (--baseline). The worker's stdout
goes to a file (its one-line-per-event log), as under a service manager; `"tty": true` puts
it on a pseudo-terminal instead (the live table). `"worker_cmd": ["script.py", ...]` runs
`python script.py ... worker --dir D` instead (an instrumented or modified worker).
`"processes": N` runs `wfl worker --processes N` (default 1, one process as in the issue;
with N > 1 the RSS read is the supervisor's).

Cases run one after another; within a case, runs start `gap` seconds apart, where gap is
longer than the delay for short delays (one run at a time, as in the issue), and 0.3 s for
long ones (their runs overlap, but every due time falls 0.1 s after a start, never on one).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FLOWS = str(HERE / "flows.py")

import wfl  # noqa: E402  (the wfl under test: this checkout, or --baseline's worktree)
from wfl import Client, journal  # noqa: E402
from wfl.state import RunState  # noqa: E402
from wfl.store import Store  # noqa: E402

WORKER = "import sys; from wfl.entry import main; sys.argv[0] = 'wfl'; main()"
DEFAULT_CASES = [
    ["run_after", 0.1],
    ["run_after", 1.0],
    ["run_after", 10.0],
    ["sleep", 1.0],
    ["sleep", 10.0],
]


def log(msg: str) -> None:
    print(f"#   {msg}", file=sys.stderr, flush=True)


def pctl(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p99": pctl(values, 99),
        "min": min(values),
        "max": max(values),
    }


class OutsideWorker:
    """A `wfl worker --dir D` process of this interpreter, idle until runs arrive."""

    def __init__(
        self, d: str, *, tty: bool, script: list[str] | None = None, processes: int = 1
    ) -> None:
        self.d = d
        self.log_path = os.path.join(d + ".worker.log")
        self.out = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.master: int | None = None
        stdout: Any = self.out
        if tty:
            import pty

            self.master, slave = pty.openpty()
            stdout = slave
        # one worker process, as the issue measures (a wfl with `--processes` runs one per CPU
        # unless told; an older one has no such flag); "processes": N in the options for more
        # (asked of the files: an editable install's finder would find this checkout's module)
        has = os.path.exists(os.path.join(os.path.dirname(wfl.__file__), "processes.py"))
        procs = ["--processes", str(processes)] if has else []
        self.proc = subprocess.Popen(
            [sys.executable, *(script or ["-c", WORKER]), "worker", *procs, "--dir", d],
            stdout=stdout,
            stderr=self.out,
            stdin=subprocess.DEVNULL,
            # not the checkout: `python -c` puts the working directory first on sys.path, ahead
            # of PYTHONPATH, and a baseline's wfl must win over this checkout's
            cwd=d,
        )
        if tty:
            os.close(slave)
        self._wait_listening()

    def _wait_listening(self) -> None:
        """The worker has bound its wake-up socket once its marker file exists."""
        workers = Path(self.d) / "workers"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}: {self.tail()}")
            if workers.is_dir() and any(workers.iterdir()):
                return
            self.drain()
            time.sleep(0.01)
        raise RuntimeError("worker did not start listening within 30 s")

    def drain(self) -> None:
        """Read the pseudo-terminal so that the worker never blocks writing its table."""
        if self.master is None:
            return
        import select

        while select.select([self.master], [], [], 0)[0]:
            try:
                if not os.read(self.master, 65536):
                    return
            except OSError:
                return

    def idle(self, seconds: float, floor: list[float] | None = None) -> None:
        """Wait `seconds` (reading the pseudo-terminal meanwhile). floor: append how late
        (ms) this process woke from a sleep that ends half-way."""
        if floor is not None and self.master is None:
            target = time.time() + seconds / 2
            time.sleep(max(0.0, target - time.time()))
            floor.append((time.time() - target) * 1e3)
            seconds /= 2
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            if self.master is None:
                time.sleep(left)
            else:
                import select

                select.select([self.master], [], [], left)
                self.drain()

    def tail(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-600:]
        except OSError:
            return ""

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.drain()
        if self.master is not None:
            os.close(self.master)
        self.out.close()


def lateness_ms(d: str, run_id: str, kind: str) -> float:
    """Body time of the timed step minus the run_at the journal holds for it (ms)."""
    recs = journal.read(Store(d).journal_path(run_id)).records
    state = RunState.from_records(recs)
    if state.end is None or state.end.get("kind") != "success":
        raise RuntimeError(f"run {run_id} did not succeed: {state.to_dict(steps=False)}")
    body = float(state.end["result"])
    due = state.steps[0].run_at  # the timed step (run_after) or the sleep before the step
    return (body - due) * 1e3


def sitting(o: dict[str, Any], k: int) -> dict[str, Any]:
    d = tempfile.mkdtemp(prefix="wflbench-timers-", dir=o.get("tmp", "/tmp"))
    worker = None
    try:
        client = Client(d)
        worker = OutsideWorker(
            d, tty=bool(o.get("tty")), script=o.get("worker_cmd"), processes=o.get("processes", 1)
        )
        warm = [client.start(FLOWS + ":first_step", {}) for _ in range(2)]
        kinds = {kind for kind, _ in o.get("cases", DEFAULT_CASES)}
        if "sleep" in kinds:  # (pick-up alone: an older wfl may not time steps the same way)
            warm += [client.start(FLOWS + ":timed_sleep", {"delay": 0.01})]
        if "run_after" in kinds:
            warm += [client.start(FLOWS + ":timed_step", {"delay": 0.01})]
        for rid in warm:
            client.wait(rid, timeout=30)
        worker.idle(0.3)
        out: dict[str, Any] = {}
        floor: list[float] = []
        reps = o["reps"]
        for kind, delay in o.get("cases", DEFAULT_CASES):
            flow = FLOWS + (":timed_step" if kind == "run_after" else ":timed_sleep")
            gap = delay + 0.25 if delay <= 1.0 else 0.3
            ids = []
            for _ in range(reps):
                ids.append(client.start(flow, {"delay": delay}))
                worker.idle(gap, floor)
            worker.idle(max(0.0, delay - gap) + 0.5)
            late = [lateness_ms(d, rid, kind) for rid in ids]
            out[f"{kind} {delay:g}"] = late
            log(f"sitting {k} {kind} {delay:g}: median {statistics.median(late):.2f} ms")
        pick, started = [], []
        for _ in range(reps):
            t = time.time()
            rid = client.start(FLOWS + ":first_step", {})
            started.append((time.time() - t) * 1e3)
            worker.idle(0.25)
            pick.append((float(client.wait(rid, timeout=30)) - t) * 1e3)
        out["pickup"] = pick
        out["pickup_start"] = started
        out["floor"] = floor
        out["rss_mb"] = worker.rss_mb()
        return out
    finally:
        if worker is not None:
            worker.stop()
            if o.get("keep_log"):
                shutil.copy(worker.log_path, o["keep_log"])
            Path(worker.log_path).unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    o = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    o.setdefault("reps", 10)
    o.setdefault("sittings", 3)
    log(f"wfl from {os.path.dirname(wfl.__file__)}")
    probe = subprocess.run(
        [sys.executable, "-c", "import wfl; print(wfl.__file__)"],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    if os.path.dirname(probe.stdout.strip()) != os.path.dirname(wfl.__file__):
        raise SystemExit(f"the worker would import another wfl: {probe.stdout.strip()}")
    sittings = [sitting(o, k) for k in range(1, o["sittings"] + 1)]
    merged: dict[str, list[float]] = {}
    for s in sittings:
        for key, vals in s.items():
            if isinstance(vals, list):
                merged.setdefault(key, []).extend(vals)
    res = {
        "wfl_path": os.path.dirname(wfl.__file__),
        "tty": bool(o.get("tty")),
        "cases": {key: summary(vals) for key, vals in merged.items()},
        # medians of each sitting, to show how much they move
        "sitting_medians": {
            key: [statistics.median(s[key]) for s in sittings if s.get(key)] for key in merged
        },
        "raw_ms": merged,
        "worker_rss_mb": [s["rss_mb"] for s in sittings],
    }
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
