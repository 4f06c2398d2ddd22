#!/usr/bin/env python3
"""Peer baseline: DBOS Transact on SQLite, measured on this machine.

(A copy of ../shared/bench/dbos_bench.py, lint-fixed, so that bench/run.py works from a
fresh clone; bench/run.py runs it as a subprocess with the peer interpreter.)

Run with the bench venv's interpreter (dbos + msgpack installed there):

    python ../shared/bench/dbos_bench.py    (in a venv with `pip install dbos msgpack`)

Each phase runs in its own child process with a fresh SQLite system database
in its own temp directory (DBOS is a process-wide singleton), so phases do not
share a database or warm caches. Results: one JSON line (prefixed "JSON ")
and a short table.

Phases
  seq       W workflows x S trivial steps, called one after another
  threads8  the same W workflows, called directly from 8 client threads
  queue8    the same W workflows, enqueued on a DBOS queue with
            worker_concurrency=8 (polling_interval_sec set by --queue-poll)
  nsteps    one workflow of N steps for each N in --sizes, with per-step
            timings of the first and last 100 steps (does cost grow with N?)
  sleep     workflow: DBOS.sleep(D) then a step, for each D in --sleep-delays; lateness
            of the step body after the end time DBOS recorded for the sleep,
            --sleep-reps times each (runs started like bench/timers.py's: one at a
            time for D <= 1 s, 0.3 s apart for longer D)
  import    wall time of `python -c "import dbos"` (and `-c pass` baseline)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.abspath(__file__)


# --------------------------------------------------------------------------
# child side: one phase, fresh DB, prints one JSON object on the last line
# --------------------------------------------------------------------------


def _setup_dbos(tmpdir: str, database_url: str | None = None):
    import logging

    from dbos import DBOS

    db_path = os.path.join(tmpdir, "dbos_sys.sqlite")
    DBOS(
        config={
            "name": "wflbench",
            # --database-url: DBOS's system database on PostgreSQL (bench/pg.py)
            "system_database_url": database_url or f"sqlite:///{db_path}",
            "log_level": "WARNING",
        }
    )
    logging.getLogger("dbos").setLevel(logging.WARNING)
    return DBOS, db_path


def _sqlite_pragmas(db_path: str) -> dict:
    import sqlite3

    c = sqlite3.connect(db_path)
    try:
        jm = c.execute("PRAGMA journal_mode").fetchone()[0]
        sy = c.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        c.close()
    return {"journal_mode": jm, "synchronous": sy, "db_bytes": os.path.getsize(db_path)}


def child(phase: str, args) -> dict:
    tmpdir = tempfile.mkdtemp(prefix=f"dbosbench-{phase}-", dir=args.tmp)
    DBOS, db_path = _setup_dbos(tmpdir, args.database_url)

    step_times: list = []

    @DBOS.step()
    def trivial_step(i: int) -> dict:
        return {"i": i, "ok": True, "s": "hello"}

    @DBOS.workflow()
    def wf_steps(n: int) -> int:
        for i in range(n):
            trivial_step(i)
        return n

    @DBOS.workflow()
    def wf_steps_timed(n: int) -> int:
        # per-step wall time, measured around each durable step call
        for i in range(n):
            t0 = time.perf_counter()
            trivial_step(i)
            step_times.append(time.perf_counter() - t0)
        return n

    @DBOS.step()
    def stamp_step() -> float:
        return time.time()

    @DBOS.workflow()
    def wf_sleep(secs: float) -> list:
        before = time.time()  # not a step: fine for a benchmark
        DBOS.sleep(secs)
        after = stamp_step()
        return [before, after]

    if args.sqlite_synchronous:
        # Diagnostic only: override SQLite's durability on every connection
        # DBOS opens (e.g. OFF = no fsync) to split per-step cost into CPU and
        # disk-sync parts. Not a fair durable configuration.
        import sqlalchemy as sa
        from sqlalchemy import event

        @event.listens_for(sa.engine.Engine, "connect")
        def _sync_pragma(dbapi_conn, _rec):
            dbapi_conn.execute(f"PRAGMA synchronous={args.sqlite_synchronous}")

    DBOS.launch()
    out: dict = {"phase": phase, "sqlite_synchronous_override": args.sqlite_synchronous}
    W, S = args.workflows, args.steps

    # warm-up: a few workflows so that first-call costs are not counted
    for _ in range(3):
        wf_steps(S)

    if phase == "seq":
        t0 = time.perf_counter()
        for _ in range(W):
            wf_steps(S)
        dt = time.perf_counter() - t0
        out.update(
            workflows=W,
            steps_per_wf=S,
            seconds=dt,
            wf_per_s=W / dt,
            steps_per_s=W * S / dt,
            ms_per_wf=dt / W * 1e3,
        )

    elif phase == "threads8":
        C = args.concurrency
        per = [W // C + (1 if k < W % C else 0) for k in range(C)]
        errs: list = []

        def worker(n: int) -> None:
            try:
                for _ in range(n):
                    wf_steps(S)
            except Exception as e:  # pragma: no cover
                errs.append(repr(e))

        ths = [threading.Thread(target=worker, args=(n,)) for n in per]
        t0 = time.perf_counter()
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        dt = time.perf_counter() - t0
        out.update(
            workflows=W,
            steps_per_wf=S,
            concurrency=C,
            seconds=dt,
            wf_per_s=W / dt,
            steps_per_s=W * S / dt,
            errors=errs[:3],
        )

    elif phase == "queue8":
        C = args.concurrency
        q = DBOS.register_queue(
            "benchq", worker_concurrency=C, polling_interval_sec=args.queue_poll
        )
        # DBOS's queue manager notices a newly registered queue only on its
        # next 1 s check; push a few workflows through first so that this
        # start-up delay is not counted in the timed run.
        # Queue handles poll the database for the result (DBOS default 1 s);
        # poll every 10 ms so that the wait does not round the time up.
        for h in [q.enqueue(wf_steps, S) for _ in range(3)]:
            h.get_result(polling_interval_sec=0.01)
        t0 = time.perf_counter()
        handles = [q.enqueue(wf_steps, S) for _ in range(W)]
        t_enq = time.perf_counter() - t0
        res = [h.get_result(polling_interval_sec=0.01) for h in handles]
        dt = time.perf_counter() - t0
        assert all(r == S for r in res)
        out.update(
            workflows=W,
            steps_per_wf=S,
            concurrency=C,
            queue_poll_s=args.queue_poll,
            enqueue_seconds=t_enq,
            seconds=dt,
            wf_per_s=W / dt,
            steps_per_s=W * S / dt,
        )

    elif phase == "nsteps":
        rows = []
        for n in args.sizes:
            step_times.clear()
            t0 = time.perf_counter()
            wf_steps_timed(n)
            dt = time.perf_counter() - t0
            k = min(100, n)
            first = statistics.median(step_times[:k]) * 1e3
            last = statistics.median(step_times[-k:]) * 1e3
            rows.append(
                {
                    "n": n,
                    "seconds": dt,
                    "ms_per_step": dt / n * 1e3,
                    "steps_per_s": n / dt,
                    "median_ms_first100": first,
                    "median_ms_last100": last,
                }
            )
        out["rows"] = rows

    elif phase == "sleep":
        import sqlite3

        by_delay: dict = {}
        for secs in args.sleep_delays:
            gap = secs + 0.25 if secs <= 1.0 else 0.3
            handles = []
            for _ in range(args.sleep_reps):
                handles.append(DBOS.start_workflow(wf_sleep, secs))
                time.sleep(gap)
            late = []
            db = sqlite3.connect(db_path)
            for h in handles:
                _, after = h.get_result()
                # the sleep's end time as DBOS recorded it (what wfl's run_at is to wfl)
                (due,) = db.execute(
                    "SELECT output FROM operation_outputs"
                    " WHERE workflow_uuid = ? AND function_name = 'DBOS.sleep'",
                    (h.workflow_id,),
                ).fetchone()
                late.append((after - float(due)) * 1e3)
            db.close()
            by_delay[f"{secs:g}"] = late
        late = by_delay.get("1") or next(iter(by_delay.values()))
        out.update(
            reps=len(late),
            by_delay=by_delay,
            lateness_ms=late,
            lateness_ms_median=statistics.median(late),
            lateness_ms_min=min(late),
            lateness_ms_max=max(late),
        )

    else:
        raise SystemExit(f"unknown phase {phase}")

    if not args.database_url:
        out["sqlite"] = _sqlite_pragmas(db_path)
    DBOS.destroy()
    if not args.keep_db:
        import shutil

        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


# --------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------


def _startup(cmd: list, reps: int) -> dict:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        ts.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(ts), "min_ms": min(ts), "max_ms": max(ts), "reps": reps}


def run_phase(phase: str, args) -> dict:
    cmd = [
        sys.executable,
        HERE,
        "--child",
        phase,
        "--workflows",
        str(args.workflows),
        "--steps",
        str(args.steps),
        "--concurrency",
        str(args.concurrency),
        "--sizes",
        ",".join(map(str, args.sizes)),
        "--sleep-reps",
        str(args.sleep_reps),
        "--sleep-delays",
        ",".join(f"{x:g}" for x in args.sleep_delays),
        "--queue-poll",
        str(args.queue_poll),
        "--tmp",
        args.tmp,
    ]
    if args.keep_db:
        cmd.append("--keep-db")
    if args.sqlite_synchronous:
        cmd += ["--sqlite-synchronous", args.sqlite_synchronous]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        return {"phase": phase, "error": p.stderr[-2000:]}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    res = json.loads(lines[-1][len("RESULT ") :])
    res["child_wall_s"] = wall
    return res


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workflows", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--sleep-reps", type=int, default=5)
    ap.add_argument("--sleep-delays", default="1", help="seconds, comma-separated")
    ap.add_argument("--import-reps", type=int, default=7)
    ap.add_argument(
        "--queue-poll",
        type=float,
        default=0.05,
        help="DBOS queue polling_interval_sec (DBOS default is 1.0)",
    )
    ap.add_argument("--phases", default="seq,threads8,queue8,nsteps,sleep,import")
    ap.add_argument(
        "--sqlite-synchronous",
        default=None,
        help="diagnostic: force PRAGMA synchronous (e.g. OFF) on "
        "DBOS's SQLite connections; default = DBOS's own (FULL)",
    )
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument(
        "--keep-db", action="store_true", help="keep each phase's temp SQLite directory"
    )
    ap.add_argument(
        "--database-url", default=None, help="DBOS system database on PostgreSQL (a URL)"
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.sizes = [int(x) for x in str(args.sizes).split(",") if x]
    args.sleep_delays = [float(x) for x in str(args.sleep_delays).split(",") if x]

    if args.child:
        res = child(args.child, args)
        print("RESULT " + json.dumps(res), flush=True)
        return

    import platform
    from importlib.metadata import version

    import dbos  # noqa: F401  (version only)

    meta = {
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "dbos": version("dbos"),
        "sqlalchemy": version("sqlalchemy"),
        "sqlite": __import__("sqlite3").sqlite_version,
        "tmp": args.tmp,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "sqlite_synchronous_override": args.sqlite_synchronous,
    }
    results: dict = {"meta": meta}
    T0 = time.perf_counter()
    for ph in args.phases.split(","):
        if ph == "import":
            results["import"] = {
                "import_dbos": _startup([sys.executable, "-c", "import dbos"], args.import_reps),
                "pass": _startup([sys.executable, "-c", "pass"], args.import_reps),
            }
        else:
            results[ph] = run_phase(ph, args)
        print(f"# {ph} done at {time.perf_counter() - T0:.1f}s", file=sys.stderr, flush=True)
    results["total_s"] = time.perf_counter() - T0

    print("JSON " + json.dumps(results))

    # ---- table ----
    def g(d, k, fmt="{:.1f}"):
        v = d.get(k)
        return fmt.format(v) if isinstance(v, (int, float)) else str(v)

    print()
    print(
        f"DBOS {meta['dbos']} on SQLite {meta['sqlite']}, Python {meta['python']}, "
        f"{meta['nproc']} cpus"
    )
    print(f"{'phase':<22}{'wf/s':>10}{'steps/s':>10}{'seconds':>10}")
    for ph in ("seq", "threads8", "queue8"):
        r = results.get(ph)
        if not r:
            continue
        if "error" in r:
            print(f"{ph:<22} ERROR {r['error'][-200:]}")
            continue
        print(
            f"{ph:<22}{g(r, 'wf_per_s'):>10}{g(r, 'steps_per_s'):>10}"
            f"{g(r, 'seconds', '{:.2f}'):>10}"
        )
    r = results.get("nsteps")
    if r and "rows" in r:
        print(
            f"\n{'N steps':<10}{'total s':>10}{'ms/step':>10}{'steps/s':>10}"
            f"{'med ms first100':>17}{'med ms last100':>16}"
        )
        for row in r["rows"]:
            print(
                f"{row['n']:<10}{row['seconds']:>10.2f}{row['ms_per_step']:>10.3f}"
                f"{row['steps_per_s']:>10.1f}{row['median_ms_first100']:>17.3f}"
                f"{row['median_ms_last100']:>16.3f}"
            )
    elif r:
        print("nsteps ERROR", r.get("error", "")[-200:])
    r = results.get("sleep")
    if r and "lateness_ms_median" in r:
        print(
            f"\nsleep(1)+step lateness ms: median {r['lateness_ms_median']:.1f} "
            f"(min {r['lateness_ms_min']:.1f}, max {r['lateness_ms_max']:.1f}, "
            f"n={r['reps']})"
        )
    r = results.get("import")
    if r:
        a, b = r["import_dbos"], r["pass"]
        print(
            f"python -c 'import dbos': median {a['median_ms']:.0f} ms "
            f"(min {a['min_ms']:.0f}, max {a['max_ms']:.0f}); "
            f"python -c pass: median {b['median_ms']:.0f} ms"
        )
    sq = results.get("seq", {}).get("sqlite")
    if sq:
        print(
            f"SQLite journal_mode={sq['journal_mode']} synchronous={sq['synchronous']}"
            f" (as a fresh connection sees it; override in use: "
            f"{meta['sqlite_synchronous_override']})"
        )
    print(f"total {results['total_s']:.1f}s")


if __name__ == "__main__":
    main()
