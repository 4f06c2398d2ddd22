"""Read-path timings: `wfl show` / `wfl status RUN` on one big journal, and `wfl status` over
many runs (issue 15's "reading a journal is fast", issue 10's default view).

    python bench/reads.py                   # 100,000-record journal, 10,000 runs
    python bench/reads.py --records 60000 --runs 0 --reps 3

The journal is written directly (a run record, then `sched`/`att`/`done` for each step, as a
worker writes them for queries), so building it takes a second, not a worker's minutes. The
10,000 runs are real `Client.start` runs (not driven: listing reads their summaries alike).
Each figure is the median wall time of the real `wfl` command in a subprocess (output to a
pipe), with its median CPU time: on a loaded machine, compare CPU times.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wfl import Client, journal, records
from wfl.loader import file_sha

REPO = Path(__file__).resolve().parent.parent
FLOW = str(REPO / "sample_flows" / "greeting.py")
WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"


def big_run(directory: Path, n_records: int) -> str:
    """One finished run of greet whose journal holds `n_records` records."""
    run_id = "b1600000000b"
    t = 1_790_000_000.0
    recs = [
        records.run(run_id=run_id, workflow="greet", flow=FLOW, flow_sha=file_sha(FLOW),
                    args={"name": "Ada"}, created_at=t, version=0, on_complete=None,
                    context=None, parent=None)
    ]  # fmt: skip
    n = 0
    while len(recs) < n_records - 1:
        t += 0.001
        recs.append(records.sched(n, "query", "greeting_query", {"name": f"Ada {n}"}, t, t))
        recs.append(records.att(n, 1, t))
        recs.append(records.done(n, 1, f"Hello, Ada {n}!", t))
        n += 1
    recs.append(records.end("success", t, result="done"))
    directory.mkdir(parents=True, exist_ok=True)
    journal.create(directory / f"{run_id}.journal", recs[:n_records])
    return run_id


def many_runs(directory: Path, count: int) -> None:
    client = Client(directory)
    for i in range(count):
        client.start(FLOW, {"name": f"n{i}"})


def timed(args: list[str], reps: int) -> tuple[float, float]:
    """Median wall seconds and median CPU seconds (user + system) of `wfl ARGS`. CPU time is
    the figure to compare on a loaded machine."""
    env = {**os.environ, "COLUMNS": "200"}
    walls, cpus = [], []
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run([WFL, *args], capture_output=True, check=True, env=env)
        walls.append(time.perf_counter() - began)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    opts = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="wfl-reads-"))
    try:
        if opts.records:
            d = tmp / "big"
            run_id = big_run(d, opts.records)
            size = (d / f"{run_id}.journal").stat().st_size
            print(f"one journal of {opts.records:,} records ({size / 1e6:.1f} MB):")
            for args in (["show", run_id], ["show", run_id, "--json"], ["status", run_id],
                         ["status", run_id, "--json"]):  # fmt: skip
                wall, cpu = timed([*args, "--dir", str(d)], opts.reps)
                print(
                    f"  wfl {' '.join(args):<32} {wall * 1000:8.0f} ms  (cpu {cpu * 1000:.0f} ms)"
                )
        if opts.runs:
            d = tmp / "many"
            many_runs(d, opts.runs)
            timed(["status", "--json", "--dir", str(d)], 1)  # builds the index once
            print(f"{opts.runs:,} runs:")
            for args in (["status"], ["status", "--json"], ["status", "--all"]):
                wall, cpu = timed([*args, "--dir", str(d)], opts.reps)
                print(
                    f"  wfl {' '.join(args):<32} {wall * 1000:8.0f} ms  (cpu {cpu * 1000:.0f} ms)"
                )
        print(f"load average: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
