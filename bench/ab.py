"""A/B of workloads 1 and 2 (issue 9): this checkout against another one, sittings alternating
in one invocation so that both see the same machine load.

    python bench/ab.py --baseline main --reps 3            # a temporary worktree of REV
    python bench/ab.py --baseline-dir /path/to/checkout    # an existing checkout

Workload 1: 200 runs x 10 sync steps, 8 at a time, started while the worker is up (and the
same with `async def` steps; w1_cmd1 / w1_cmd2: through `wfl worker --processes 1 / 2`, with
the worker's and the client's CPU per step); workload 2: one run of N sequential steps,
N = 2,000 and 6,000, reported as the marginal cost per step between them ((t6000 - t2000) /
4000). Prints medians, the load average before and after, and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import Baseline, run_wfl  # noqa: E402


def sitting(which: str, path: str | None, args: argparse.Namespace) -> dict[str, float]:
    opts = {"tmp": args.tmp, "workflows": args.workflows, "steps": args.steps}
    out: dict[str, float] = {}
    for key, wf in (("w1_sync", "steps"), ("w1_async", "steps_async")):
        if key not in args.only:
            continue
        r = run_wfl("throughput", dict(opts, workflow=wf), 300, baseline=path)
        if "error" in r:
            print(f"# {which} {key}: {r['error']}", file=sys.stderr)
            continue
        out[key] = r["steps_per_s"]
        out[key + "_fsyncs"] = r["fsyncs_per_step"]
    for key, procs in (("w1_cmd1", 1), ("w1_cmd2", 2)):  # through `wfl worker --processes N`
        if key not in args.only:
            continue
        r = run_wfl("throughput_procs", dict(opts, procs=procs), 300, baseline=path)
        if "error" in r:
            print(f"# {which} {key}: {r['error']}", file=sys.stderr)
            continue
        out[key] = r["steps_per_s"]
        for cpu in ("worker_cpu_us_per_step", "client_cpu_us_per_step"):
            if cpu in r:
                out[f"{key}_{cpu.split('_')[0]}_us"] = r[cpu]
    if "w2" in args.only:
        r = run_wfl("nsteps", dict(opts, sizes=[args.lo, args.hi]), 600, baseline=path)
        if "error" in r:
            print(f"# {which} w2: {r['error']}", file=sys.stderr)
        else:
            rows = {row["n"]: row for row in r["rows"]}
            lo, hi = rows[args.lo], rows[args.hi]
            out["w2_marginal_ms"] = (hi["seconds"] - lo["seconds"]) / (args.hi - args.lo) * 1e3
            out["w2_ms_per_step_hi"] = hi["ms_per_step"]
            out["w2_fsyncs"] = hi["fsyncs_per_step"]
    print(f"# {which}: " + " ".join(f"{k}={v:.3f}" for k, v in out.items()), file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", help="a git revision, checked out in a temporary worktree")
    ap.add_argument("--baseline-dir", help="an existing checkout to compare with")
    ap.add_argument("--this-dir", help="measure this checkout instead of the installed wfl")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="w1_sync,w1_async,w2")
    ap.add_argument("--workflows", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lo", type=int, default=2000)
    ap.add_argument("--hi", type=int, default=6000)
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    args = ap.parse_args()
    base: Baseline | None = None
    bpath = args.baseline_dir
    if args.baseline:
        base = Baseline(args.baseline, args.tmp)
        bpath = base.path
    load0 = os.getloadavg()
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    try:
        for rep in range(args.reps):
            a = ("A", args.this_dir)
            order = [a, ("B", bpath)] if rep % 2 == 0 else [("B", bpath), a]
            for which, path in order:
                if which == "B" and bpath is None:  # (no baseline: A alone)
                    continue
                results[which].append(sitting(which, path, args))
    finally:
        if base is not None:
            base.close()
    load1 = os.getloadavg()
    med = {
        w: {k: statistics.median(r[k] for r in rs if k in r) for k in rs[0]} if rs else {}
        for w, rs in results.items()
    }
    print(f"load average at start {load0[0]:.1f}, at end {load1[0]:.1f}")
    for k in med["A"]:
        b = med["B"].get(k)
        print(f"{k:22s} A(this) {med['A'][k]:10.3f}   B(baseline) " + (f"{b:10.3f}" if b else "-"))
    print("JSON " + json.dumps({"load": [load0, load1], "median": med, "all": results}))


if __name__ == "__main__":
    main()
