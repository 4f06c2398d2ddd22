"""What a lease costs per run on the journal directory store (issue 9, "cheaper leases"):
the worker's load of a run (try_lease, open its writer, read_all, close, release), the lease
alone (try_lease + release), leases taken while all the others are held (as in a worker with
every run live), and `is_leased` (what `wfl status --why` and migrate ask).

    python bench/leases.py                        # this checkout's wfl
    python bench/leases.py --against /work/main   # A/B: alternate with another checkout's wfl
    python bench/leases.py --against /work/main --workload1 --rounds 9

With --against, each round runs this script's measurement once under this checkout and once
under the other (PYTHONPATH), alternating, in one invocation; the table gives medians of the
per-round medians, in microseconds per run, and the load average before and after.
--workload1 measures instead bench/run.py's workload 1 (200 runs x 10 steps, started while
the worker serves): ms the worker's loop spent in `try_lease` and `writer` (all runs), the
throughput, and the CPU seconds of the sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FLOW = str(REPO / "sample_flows" / "greeting.py")


def measure(runs: int, reps: int) -> dict[str, float]:
    """Median microseconds per run of each operation, over `reps` passes over `runs` runs."""
    from wfl import Client
    from wfl.store import FileStore

    with tempfile.TemporaryDirectory(dir=os.environ.get("WFL_BENCH_TMP")) as tmp:
        directory = Path(tmp) / "runs"
        client = Client(directory)
        ids = [client.start(FLOW, {"name": f"n{i}"}) for i in range(runs)]
        store = FileStore(directory)
        out: dict[str, list[float]] = {"load": [], "lease": [], "held": [], "is_leased": []}
        for _ in range(reps):
            t = time.perf_counter()
            for run_id in ids:  # what Worker._load and driver_closed do around a driver
                lease = store.try_lease(run_id)
                assert lease is not None
                writer = store.writer(run_id)
                writer.read_all()
                writer.close()
                lease.release()
            out["load"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for run_id in ids:
                lease = store.try_lease(run_id)
                assert lease is not None
                lease.release()
            out["lease"].append(time.perf_counter() - t)
            t = time.perf_counter()  # as a worker with every run live: all leases held at once
            held = [store.try_lease(run_id) for run_id in ids]
            for lease in held:
                assert lease is not None
                lease.release()
            out["held"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for run_id in ids:
                assert not store.is_leased(run_id)
            out["is_leased"].append(time.perf_counter() - t)
        return {k: statistics.median(v) / runs * 1e6 for k, v in out.items()}


def workload1() -> dict[str, float]:
    """Workload 1 with the lease calls timed where the worker makes them (its loop thread)."""
    sys.path.insert(0, str(REPO / "bench"))
    import wfl_side

    from wfl.store import FileStore

    spent = {"try_lease": 0.0, "writer": 0.0}
    for name in spent:
        real = getattr(FileStore, name)

        def timed(self: FileStore, run_id: str, _real: Any = real, _name: str = name) -> Any:
            t = time.perf_counter()
            try:
                return _real(self, run_id)
            finally:
                spent[_name] += time.perf_counter() - t

        setattr(FileStore, name, timed)
    cpu0 = _cpu()
    r = wfl_side.phase_throughput({"tmp": "/tmp", "workflows": 200, "steps": 10, "timeout": 300})
    return {
        "try_lease_ms": spent["try_lease"] * 1e3,
        "writer_ms": spent["writer"] * 1e3,
        "steps_per_s": float(r["steps_per_s"]),
        "cpu_s": _cpu() - cpu0,
    }


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def child(checkout: Path, args: argparse.Namespace) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cmd = [sys.executable, __file__, "--child", "--runs", str(args.runs), "--reps", str(args.reps)]
    cmd += ["--workload1"] if args.workload1 else []
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=checkout)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=5, help="passes over the runs per round")
    ap.add_argument("--rounds", type=int, default=5, help="A/B rounds with --against")
    ap.add_argument("--against", type=Path, help="another checkout of wfl to compare with")
    ap.add_argument("--workload1", action="store_true", help="time leases inside workload 1")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import wfl

        assert Path(wfl.__file__).parent.parent == Path.cwd(), "PYTHONPATH did not pick wfl"
        print(json.dumps(workload1() if args.workload1 else measure(args.runs, args.reps)))
        return
    sides = {"this": REPO} | ({"against": args.against.resolve()} if args.against else {})
    load_before = os.getloadavg()
    got: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for _ in range(args.rounds if args.against else 1):
        for name, checkout in sides.items():
            got[name].append(child(checkout, args))
    load_after = os.getloadavg()
    ops = list(got["this"][0])
    what = "workload 1 (200 runs)" if args.workload1 else f"µs per run, {args.runs} runs"
    print(f"{what}; medians of {len(got['this'])} round(s)")
    print(f"{'':10}" + "".join(f"{op:>14}" for op in ops))
    result = {}
    for name, rounds in got.items():
        med = {op: statistics.median(r[op] for r in rounds) for op in rounds[0]}
        result[name] = med
        print(f"{name:10}" + "".join(f"{med[op]:14.1f}" for op in ops))
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print("JSON " + json.dumps({"sides": result, "load": [load_before, load_after]}))


if __name__ == "__main__":
    main()
