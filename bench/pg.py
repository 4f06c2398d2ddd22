#!/usr/bin/env python3
"""Workload 1 (200 runs x 10 steps, 8 at a time) on PostgreSQL: wfl with 1, 2 and 4 worker
processes, and DBOS on the same PostgreSQL server, in one invocation; the journal directory
alongside for reference.

    python bench/pg.py [--reps 3] [--procs 1,2,4] [--no-dbos] [--no-files] [--quick]

Starts a throwaway PostgreSQL cluster (tests/pg_cluster.py: initdb + pg_ctl on a temp dir,
loopback, fsync on: commits are durable, as the journal's fsyncs are) and removes it at the
end. Each repetition gets a fresh schema (wfl) or database (DBOS). wfl's runs are created
first; then N `wfl worker`-like processes (Worker.run(), listening) start together at a
barrier, and the clock runs from the barrier until every run has completed (a summary query
every 10 ms), when they are stopped. DBOS runs its `queue8` phase
(bench/dbos_peer.py: a queue with worker_concurrency=8 fed the 200 workflows) against its
system database on the same server. Prints a table and one `JSON {...}` line (medians).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent / "tests"))  # pg_cluster only: bench/flows.py wins

from pg_cluster import Cluster, find_bin  # noqa: E402

WORKER = """
import asyncio, os, sys, time
sys.path.insert(0, {here!r})
import flows
from wfl.worker import Worker
w = Worker({store!r}, listen={listen})
w.store.ensure()
print("ready", flush=True)
while not os.path.exists({barrier!r}):
    time.sleep(0.001)

async def main():
    w.install_signal_handlers()
    await w.run()

asyncio.run(main())
"""


def log(msg: str) -> None:
    print(f"#   {msg}", file=sys.stderr, flush=True)


def wfl_round(store: str, procs: int, workflows: int, steps: int, tmp: str) -> dict[str, Any]:
    """Workload 1 on `store` with `procs` worker processes; steps/s."""
    import flows

    from wfl import Client
    from wfl.worker import Worker

    client = Client(store=store)
    for _ in range(3):  # warm-up: schema, imports, first-call costs
        client.start(flows.steps, {"n": steps})
    Worker(client.store, listen=False).run_sync(once=True)
    ids = [client.start(flows.steps, {"n": steps}) for _ in range(workflows)]
    barrier = tempfile.mktemp(prefix="wflbench-go-", dir=tmp)
    # PostgreSQL workers LISTEN (as `wfl worker` does): without it they poll every run
    # after every step, a query each; on a directory that poll is one fstat
    listen = store.startswith("postgresql://")
    code = WORKER.format(here=str(HERE), store=store, barrier=barrier, listen=listen)
    children = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    for c in children:
        assert c.stdout is not None
        c.stdout.readline()  # "ready"
    t0 = time.perf_counter()
    Path(barrier).touch()
    # the workers serve until every run has completed (a summary query every 10 ms)
    deadline = t0 + 600
    while len(client.list(state="completed")) < workflows + 3:
        if time.perf_counter() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.01)
    dt = time.perf_counter() - t0
    for c in children:
        c.terminate()
    for c in children:
        c.wait(timeout=60)
    os.unlink(barrier)
    bad = [r for r in ids if client.status(r).state != "completed"]
    client.store.close()
    if bad:
        raise RuntimeError(f"{len(bad)} runs did not complete")
    return {"procs": procs, "seconds": dt, "steps_per_s": workflows * steps / dt}


def fresh_schema(cluster: Cluster, db: str, name: str) -> str:
    import psycopg

    with psycopg.connect(cluster.url(db), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    return f"{cluster.url(db)}?options=-csearch_path%3D{name}"


def dbos_round(cluster: Cluster, n: int, args: argparse.Namespace) -> dict[str, Any]:
    url = cluster.create_db(f"dbos_{n}")
    cmd = [sys.executable, str(HERE / "dbos_peer.py"), "--child", "queue8",
           "--workflows", str(args.workflows), "--steps", str(args.steps), "--concurrency", "8",
           "--tmp", args.tmp, "--database-url", url]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        return {"error": p.stderr.strip().splitlines()[-1][:300] if p.stderr.strip() else "?"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    res: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return res


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--workflows", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-dbos", action="store_true")
    ap.add_argument("--no-files", action="store_true")
    ap.add_argument("--quick", action="store_true", help="40 runs, one repetition")
    ap.add_argument("--tmp", default="/tmp")
    args = ap.parse_args()
    if args.quick:
        args.workflows, args.reps = 40, 1
    procs = [int(p) for p in args.procs.split(",")]
    bindir = find_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
    cluster = Cluster(bindir, fsync=True)
    results: dict[str, list[float]] = {}
    try:
        cluster.init()
        db = "wflbench"
        cluster.create_db(db)
        log(f"PostgreSQL {bindir.parent.name} at {cluster.url(db)} (fsync on)")
        n = 0
        for rep in range(args.reps):
            for p in procs:
                n += 1
                r = wfl_round(fresh_schema(cluster, db, f"r{n}"), p, args.workflows,
                              args.steps, args.tmp)  # fmt: skip
                results.setdefault(f"wfl_pg_{p}", []).append(r["steps_per_s"])
                log(f"rep {rep + 1}: wfl on PostgreSQL, {p} processes: {r['steps_per_s']:.0f}")
            if not args.no_files:
                for p in procs[:2]:
                    d = tempfile.mkdtemp(prefix="wflbench-files-", dir=args.tmp)
                    r = wfl_round(d, p, args.workflows, args.steps, args.tmp)
                    subprocess.run(["rm", "-rf", d], check=False)
                    results.setdefault(f"wfl_files_{p}", []).append(r["steps_per_s"])
                    log(f"rep {rep + 1}: wfl on a directory, {p} procs: {r['steps_per_s']:.0f}")
            if not args.no_dbos:
                d = dbos_round(cluster, rep, args)
                if "error" in d:
                    log(f"rep {rep + 1}: DBOS failed: {d['error']}")
                else:
                    results.setdefault("dbos_pg", []).append(d["steps_per_s"])
                    log(f"rep {rep + 1}: DBOS on PostgreSQL: {d['steps_per_s']:.0f}")
    finally:
        cluster.destroy()
    med = {k: median(v) for k, v in results.items()}
    dbos = med.get("dbos_pg")
    one = med.get("wfl_pg_1")
    print(f"\nworkload 1: {args.workflows} runs x {args.steps} steps, 8 at a time; "
          f"medians of {args.reps} (steps/s)")  # fmt: skip
    print(f"{'':44}{'steps/s':>9}{'vs DBOS':>9}{'vs 1 proc':>10}")
    for key in sorted(med, key=lambda k: (not k.startswith("wfl_pg"), k)):
        v = med[key]
        if v is None:
            continue
        label = {"dbos_pg": "DBOS on PostgreSQL (queue, concurrency 8)"}.get(key, "")
        if key.startswith("wfl_pg_"):
            label = f"wfl on PostgreSQL, {key.rsplit('_', 1)[1]} worker process(es)"
        elif key.startswith("wfl_files_"):
            label = f"wfl on a directory, {key.rsplit('_', 1)[1]} worker process(es)"
        vs_dbos = f"{v / dbos:.1f}x" if dbos and key != "dbos_pg" else ""
        vs_one = f"{v / one:.2f}x" if one and key.startswith("wfl_pg_") else ""
        print(f"{label:44}{v:9.0f}{vs_dbos:>9}{vs_one:>10}")
    print("JSON " + json.dumps({"medians": med, "all": results, "reps": args.reps,
                                "workflows": args.workflows, "steps": args.steps}))  # fmt: skip


if __name__ == "__main__":
    main()
