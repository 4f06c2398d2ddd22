#!/usr/bin/env python3
"""Pick-up (issue 16): a run started in this process while an idle `wfl worker` process waits,
until its first step's body runs; several checkouts of wfl in one invocation, sittings
alternating so that each side sees the same machine.

    python bench/pickup.py [--sittings 6] [--reps 20] [--processes 1] [SIDE ...]

A SIDE is a git revision (checked out in a temporary worktree) or `.` (this checkout; the
default is `.` alone), optionally with `@N`: that side's worker runs N processes (else
--processes). Each sitting runs bench/timers.py with no timer cases (its pick-up part:
latency = the first step body's `time.time()` minus `time.time()` just before `Client.start`;
"start" = the `Client.start` call itself) in a fresh process whose `import wfl` is that side's.
Prints the load average before and after, and per side the median, p99 and sitting medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TIMERS = HERE / "timers.py"


def pctl(values: list[float], q: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def git(*args: str) -> str:
    p = subprocess.run(["git", "-C", str(HERE.parent), *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout.strip()


def sitting(path: str | None, o: dict[str, Any]) -> dict[str, list[float]]:
    env = dict(os.environ)
    if path is not None:  # first on the path: ahead of this checkout's editable install
        env["PYTHONPATH"] = os.pathsep.join([path, *filter(None, [env.get("PYTHONPATH")])])
    p = subprocess.run(
        [sys.executable, str(TIMERS), json.dumps(o)], capture_output=True, text=True, env=env
    )
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise SystemExit(f"timers.py failed ({path}): {p.stderr[-800:]}")
    raw: dict[str, list[float]] = json.loads(lines[-1][len("RESULT ") :])["raw_ms"]
    return raw


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sides", nargs="*", default=["."])
    ap.add_argument("--sittings", type=int, default=6)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--gap", type=float, default=None, help="(unused; timers.py waits 0.25 s)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="wflbench-pickup-")
    paths: dict[str, str | None] = {}
    made: list[str] = []
    try:
        procs: dict[str, int] = {}
        for side in a.sides:
            rev, _, n = side.partition("@")
            procs[side] = int(n) if n else a.processes
            if rev == ".":
                paths[side] = None
                continue
            commit = git("rev-parse", "--short", rev)
            path = os.path.join(tmp, commit)
            if path not in made:
                git("worktree", "add", "--detach", path, commit)
                made.append(path)
            paths[side] = path
        o = {"cases": [], "reps": a.reps, "sittings": 1}
        res: dict[str, dict[str, list[float]]] = {s: {} for s in paths}
        meds: dict[str, list[float]] = {s: [] for s in paths}
        print(f"load before: {load()}", flush=True)
        for k in range(a.sittings):
            order = list(paths) if k % 2 == 0 else list(reversed(paths))
            for side in order:
                raw = sitting(paths[side], dict(o, processes=procs[side]))
                for key in ("pickup", "pickup_start"):
                    res[side].setdefault(key, []).extend(raw[key])
                meds[side].append(statistics.median(raw["pickup"]))
                print(f"# sitting {k + 1} {side}: pickup median "
                      f"{statistics.median(raw['pickup']):.2f} ms, start "
                      f"{statistics.median(raw['pickup_start']):.2f} ms (load {load()})",
                      file=sys.stderr, flush=True)  # fmt: skip
        print(f"load after: {load()}", flush=True)
        out = {}
        for side, r in res.items():
            p, s = r["pickup"], r["pickup_start"]
            out[side] = {
                "n": len(p),
                "pickup_median": round(statistics.median(p), 3),
                "pickup_p99": round(pctl(p, 99), 3),
                "start_median": round(statistics.median(s), 3),
                "start_p99": round(pctl(s, 99), 3),
                "worker_side_median": round(
                    statistics.median([x - y for x, y in zip(p, s, strict=True)]), 3
                ),
                "sitting_medians": [round(m, 2) for m in meds[side]],
            }
            print(f"{side:>10}: pickup median {out[side]['pickup_median']:.2f} ms p99 "
                  f"{out[side]['pickup_p99']:.2f}; Client.start {out[side]['start_median']:.2f} "
                  f"(p99 {out[side]['start_p99']:.2f}); after start "
                  f"{out[side]['worker_side_median']:.2f}; sittings {out[side]['sitting_medians']}",
                  flush=True)  # fmt: skip
        print("RESULT " + json.dumps(out), flush=True)
    finally:
        for path in made:
            subprocess.run(["git", "-C", str(HERE.parent), "worktree", "remove", "--force", path])


if __name__ == "__main__":
    main()
