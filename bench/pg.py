#!/usr/bin/env python3
"""Workload 1 (200 runs x 10 steps, 8 at a time) on PostgreSQL: wfl with 1, 2 and 4 worker
processes, and DBOS on the same PostgreSQL server, in one invocation; the journal directory
alongside for reference.

    python bench/pg.py [--reps 5] [--procs 1,2,4] [--modes started,precreated,supervised]
                       [--workflows 200] [--no-dbos] [--no-files] [--quick]
                       [--baseline REV] [--commit-rate] [--statements] [--setting NAME=VALUE]
                       [--warm N] [--profile S]

Starts a throwaway PostgreSQL cluster (tests/pg_cluster.py: initdb + pg_ctl on a temp dir,
loopback, fsync on: commits are durable, as the journal's fsyncs are) and removes it at the
end. Each round gets a fresh schema (wfl) or database (DBOS). Modes (see wfl_round):
- started (the default, workload 1 as issue 5 defines it): N Worker processes (each what
  `wfl worker --processes 1` runs, listening) are up and warm (they drove --warm runs each);
  a starter process, connected and warm, starts the runs; the clock runs from its first start
  to the last run's end. Start-up costs nothing of the measured time.
- supervised: the same through `wfl worker --processes N` (its processes split the runs).
- precreated: the runs exist before the workers start together at a barrier (imported and
  connected); the clock runs from the barrier (their first scan and leases count).
Per step, the table gives the commits and WAL flushes of the whole server (its cumulative
statistics) and the CPU time (/proc) of the worker processes, of the server's backends that
serve them ("srv:wkr") and the starter ("srv:st"), of its other processes ("srv:bg": WAL
writer...), of the starter, in all, how many cores were busy on average (what 2 cores
bound), "starting": the share of the round the starter took to start the runs (near 1: the
starts bound the round), and how evenly the worker processes shared the round ("top": the
busiest one's share of the steps; "tail": the share of the round between the first one's
last step and the last one's, with one process out of runs). Then each repetition's steps/s
and, per repetition, N processes against 1.
--baseline REV measures the wfl of an older commit too (a git worktree first on the
PYTHONPATH of workers and starter), alternating with this one; repetitions alternate the
order of the process counts too. DBOS runs its `queue8` phase (bench/dbos_peer.py: a queue
with worker_concurrency=8 fed the 200 workflows) against its system database on the same
server. Prints a table and one `JSON {...}` line (medians and every repetition).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent / "tests"))  # pg_cluster only: bench/flows.py wins

from pg_cluster import Cluster, find_bin  # noqa: E402

SETUP = """
import sys
sys.path.insert(0, {here!r})
import flows
from wfl import Client
from wfl.worker import Worker
client = Client(store={store!r})
for _ in range(3):  # warm-up: schema, imports, first-call costs
    client.start(flows.steps, {{"n": {steps}}})
Worker(client.store, listen=False).run_sync(once=True)
for _ in range({workflows}):
    client.start(flows.steps, {{"n": {steps}}})
"""

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

import threading
last = [0, 0.0]

def watch():  # when this worker did its last step (a look every 10 ms: ~no CPU)
    while True:
        time.sleep(0.01)
        if w.stats["steps"] != last[0]:
            last[:] = [w.stats["steps"], time.time()]

threading.Thread(target=watch, daemon=True).start()
asyncio.run(main())
print("steps", w.stats["steps"], last[1], flush=True)
"""


def log(msg: str) -> None:
    print(f"#   {msg}", file=sys.stderr, flush=True)


START = """
import sys
sys.path.insert(0, {here!r})
import flows
from wfl import Client
client = Client(store={store!r})
client.store.ensure()  # connected before the clock starts
for _ in range({warm}):  # through the workers: each loads the flow, fills its caches
    client.start(flows.steps, {{"n": {steps}}})
print("warm", flush=True)
sys.stdin.readline()  # "go": the clock runs from here
import time
t0 = time.perf_counter()
for _ in range({workflows}):
    client.start(flows.steps, {{"n": {steps}}})
print(time.perf_counter() - t0, flush=True)  # how long the starts took
sys.stdin.readline()  # "end": alive (and its server backend too) until its CPU is counted
"""

ENTRY = "import sys; from wfl.entry import main; sys.argv[0] = 'wfl'; main()"


def wait_listening(store: str, procs: int) -> None:
    """Until `procs` workers listen on `store` (one LISTEN connection each)."""
    import psycopg

    deadline = time.monotonic() + 60
    with psycopg.connect(store, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wfl-worker' "
                "AND datname = current_database()"
            ).fetchone()
            if row is not None and row[0] >= procs:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{procs} workers did not listen within 60 s")
            time.sleep(0.05)


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> dict[int, tuple[float, float]]:
    """CPU of each live process in `pids`: (the sum of its threads' run time from
    /proc/PID/task/*/schedstat, nanoseconds; user + system from /proc/PID/stat, clock ticks).
    A tick is 10 ms: 0.005 ms per step of a 2,000-step round, for each process, the size of
    the effects measured here; the threads' sum misses threads that exited (used_cpu)."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = (int(fields[11]) + int(fields[12])) / TICK
            ns = 0
            for task in Path(f"/proc/{pid}/task").iterdir():
                with suppress(OSError):
                    ns += int((task / "schedstat").read_text().split()[0])
        except OSError:
            continue  # exited
        out[pid] = (ns / 1e9, ticks)
    return out


def used_cpu(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]
             ) -> dict[int, float]:  # fmt: skip
    """CPU seconds each process used between two cpu_seconds(): its threads' sum, unless the
    ticks say more by over two ticks (a thread that exited took its time with it)."""
    used = {}
    for pid, (ns, ticks) in after.items():
        ns0, ticks0 = before.get(pid, (0.0, 0.0))
        exact, coarse = ns - ns0, ticks - ticks0
        used[pid] = coarse if coarse > exact + 2 / TICK else exact
    return used


def tree_pids(root: int) -> list[int]:
    """`root` and its children."""
    pids = [root]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == root:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def server_pids(cluster: Cluster) -> list[int]:
    """The postmaster and its children (backends, WAL writer, checkpointer...)."""
    return tree_pids(int((cluster.data / "postmaster.pid").read_text().split()[0]))


def server_counts(conn: Any) -> dict[str, float]:
    """Cluster-wide commits and WAL flushes so far (PostgreSQL 15's cumulative stats)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    commits = conn.execute("SELECT sum(xact_commit) FROM pg_stat_database").fetchone()[0]
    syncs, records, size = conn.execute(
        "SELECT wal_sync, wal_records, wal_bytes FROM pg_stat_wal"
    ).fetchone()
    return {"commits": float(commits), "wal_syncs": float(syncs), "wal_records": float(records),
            "wal_bytes": float(size)}  # fmt: skip


def backend_roles(conn: Any, starter: int | None) -> dict[int, str]:
    """Server process -> whom it serves: "wkr" (a worker's session, reads or LISTEN
    connection: application_name "wfl <pid>" of a worker process, or "wfl-worker"), "start"
    (the starter's), and everything else counts as "bg" (WAL writer, checkpointer, the
    bench's own probe...)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    roles = {}
    for pid, app in conn.execute("SELECT pid, application_name FROM pg_stat_activity"):
        if starter is not None and app == f"wfl {starter}":
            roles[pid] = "start"
        elif app == "wfl-worker" or (app.startswith("wfl ") and app != "wfl-watcher"):
            roles[pid] = "wkr"
    return roles


def wfl_round(
    cluster: Cluster,
    store: str,
    procs: int,
    args: argparse.Namespace,
    pythonpath: str | None,
    mode: str = "started",
) -> dict[str, Any]:
    """`measure_wfl_round`, and its processes killed if it fails: a worker left behind keeps
    the pipe of a shell that pipes this script's output open, and that shell waits forever."""
    spawned: list[subprocess.Popen[Any]] = []
    try:
        return measure_wfl_round(cluster, store, procs, args, pythonpath, mode, spawned)
    finally:
        for p in spawned:
            if p.poll() is None:
                p.kill()
                p.wait()


def measure_wfl_round(
    cluster: Cluster,
    store: str,
    procs: int,
    args: argparse.Namespace,
    pythonpath: str | None,
    mode: str,
    spawned: list[subprocess.Popen[Any]],
) -> dict[str, Any]:
    """Workload 1 on `store` with `procs` worker processes of the wfl on `pythonpath` (None:
    this checkout); steps/s, and per step: commits, WAL flushes, CPU of workers, server and
    starter. Modes:
    - "started" (workload 1 as issue 5 defines it): `procs` Worker processes (each a
      `wfl worker --processes 1`, listening) are up and warm (they drove args.warm runs
      first); a starter process, connected and warm, starts the runs, and the clock runs
      from its first start to the last run's end.
    - "supervised": the same through the real command, `wfl worker --processes N`.
    - "precreated": the runs exist before the workers start; the clock runs from the workers'
      start (a barrier: they are imported and connected) to the last run's end."""
    import psycopg

    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    # cwd: not the checkout (`python -c` puts the working directory ahead of PYTHONPATH)
    run = {"env": env, "cwd": args.tmp}
    later = 0 if mode == "precreated" else args.workflows  # runs started once workers are up
    code = SETUP.format(here=str(HERE), store=store, steps=args.steps,
                        workflows=args.workflows - later)  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, **run)  # type: ignore[call-overload]
    barrier = tempfile.mktemp(prefix="wflbench-go-", dir=args.tmp)
    if mode == "supervised":  # the real command: a supervisor and its processes
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        cmd = [sys.executable, "-c", ENTRY, "worker", "--processes", str(procs), "--store", store]
        children = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, **run)]
        spawned.extend(children)
        wait_listening(store, procs)
    else:
        # PostgreSQL workers LISTEN (as `wfl worker` does): without it they poll every run
        # after every step, a query each
        code = WORKER.format(here=str(HERE), store=store, barrier=barrier, listen=True)
        children = [
            subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, **run)
            for _ in range(procs)
        ]
        spawned.extend(children)
        for c in children:
            assert c.stdout is not None
            c.stdout.readline()  # "ready"
        if later:
            Path(barrier).touch()  # serving from now on
            wait_listening(store, procs)
    warm = args.warm * procs if later else 0
    total = args.workflows + 3 + warm
    # the clock's own probe: one count over the summary rows every 20 ms (cheap: the
    # harness must not take CPU from what it measures on 2 cores)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        if store.startswith("postgresql://"):
            probe = psycopg.connect(store, autocommit=True)
            sql = "SELECT count(*) FROM wfl_runs WHERE state = 'completed'"

            def completed() -> int:
                return int(probe.execute(sql).fetchone()[0])  # type: ignore[index]
        else:
            from wfl import Client

            client = Client(store=store)

            def completed() -> int:
                return len(client.list(state="completed"))

        def wait_for(count: int, limit: float) -> None:
            deadline = time.perf_counter() + limit
            while completed() < count:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"timed out: {completed()}/{count} runs completed")
                time.sleep(0.02)

        starter = None
        if later:
            code = START.format(here=str(HERE), store=store, steps=args.steps, workflows=later,
                                warm=warm)  # fmt: skip
            starter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                       stdin=subprocess.PIPE, text=True, **run)  # fmt: skip
            spawned.append(starter)
            assert starter.stdout is not None
            assert starter.stdin is not None
            starter.stdout.readline()  # "warm": its imports are done, its warm-up runs started
            wait_for(total - args.workflows, 120)  # ...and driven by the workers
        if args.statements:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
        before = server_counts(conn)
        spids = server_pids(cluster)
        roles = backend_roles(conn, starter.pid if starter else None)
        wpids = [p for c in children for p in tree_pids(c.pid)]
        mine = [starter.pid] if starter else []
        cpu0 = cpu_seconds(spids + wpids + mine)
        t0 = time.perf_counter()
        if starter is not None:
            assert starter.stdin is not None
            starter.stdin.write("go\n")
            starter.stdin.flush()
        else:
            Path(barrier).touch()
        spies = [
            subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(args.profile),
                              "-r", "250", "-f", "raw", "--nonblocking", "--threads", "--idle",
                              "-o", f"{args.tmp}/wflbench-prof-{procs}-{i}.txt"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i, pid in enumerate(wpids) if args.profile
        ]  # fmt: skip
        wait_for(total, 600)
        dt = time.perf_counter() - t0
        for spy in spies:
            spy.wait()
        cpu1 = cpu_seconds(server_pids(cluster) + wpids + mine)
        for c in children:
            c.terminate()
        ends = []  # (steps, time of the last one) of each worker
        for c in children:
            c.wait(timeout=60)
            if c.stdout is not None:
                for line in c.stdout:
                    if line.startswith("steps "):
                        ends.append((int(line.split()[1]), float(line.split()[2])))
        starting = None
        if starter is not None:
            assert starter.stdout is not None
            starting = float(starter.stdout.readline())
            assert starter.stdin is not None
            starter.stdin.write("end\n")
            starter.stdin.flush()
            starter.wait(timeout=60)
        with suppress(FileNotFoundError):
            os.unlink(barrier)
        time.sleep(0.6)  # exited backends have flushed their statistics
        after = server_counts(conn)
        if args.statements:
            top = conn.execute(
                "SELECT calls, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) "
                "FROM pg_stat_statements ORDER BY calls DESC LIMIT 12"
            ).fetchall()
            for calls, ms, query in top:
                log(f"{calls / (args.workflows * args.steps):6.2f}/step {ms:8.0f} ms  {query}")
        if store.startswith("postgresql://"):
            if completed() != total:
                raise RuntimeError("runs were not completed")
            probe.close()
    n = args.workflows * args.steps
    used = used_cpu(cpu0, cpu1)

    def ms(pids: Any) -> float:
        return 1000 * sum(used.get(p, 0.0) for p in pids) / n

    server = [p for p in used if p not in wpids and p not in mine]
    return {"procs": procs, "seconds": dt, "steps_per_s": n / dt,
            "commits_per_step": (after["commits"] - before["commits"]) / n,
            "wal_syncs_per_step": (after["wal_syncs"] - before["wal_syncs"]) / n,
            "wal_bytes_per_step": (after["wal_bytes"] - before["wal_bytes"]) / n,
            "worker_cpu_ms_per_step": ms(wpids),
            "server_cpu_ms_per_step": ms(server),
            "server_wkr_cpu_ms_per_step": ms(p for p in server if roles.get(p) == "wkr"),
            "server_start_cpu_ms_per_step": ms(p for p in server if roles.get(p) == "start"),
            "server_bg_cpu_ms_per_step": ms(p for p in server if p not in roles),
            "starter_cpu_ms_per_step": ms(mine),
            "cpu_ms_per_step": ms(used),
            "cores_busy": sum(used.values()) / dt,
            "starting_share": starting / dt if starting is not None else None,
            # how evenly the workers shared the round: the busiest one's share of the steps,
            # and the idle tail: how long before the round's end the first one ran out of steps
            "top_share": max(s for s, _ in ends) / sum(s for s, _ in ends) if ends else None,
            "idle_tail": (max(t for _, t in ends) - min(t for _, t in ends)) / dt
            if len(ends) > 1 else None}  # fmt: skip


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


def commit_rates(cluster: Cluster, db: str, tmp: str) -> dict[str, float]:
    """Commits per second this server does on this disk with 1, 2 and 8 connections, each
    a one-row INSERT (pgbench; fsync on, synchronous_commit on): the ceiling a store that
    commits once per write would meet."""
    import psycopg

    with psycopg.connect(cluster.url(db), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS commit_probe (x int)")
    where = tempfile.TemporaryDirectory(prefix="wflbench-pgbench-", dir=tmp)
    script = Path(where.name) / "insert.sql"
    script.write_text("INSERT INTO commit_probe VALUES (1);\n")
    pgbench = cluster.bindir / "pgbench"
    rates = {}
    for clients in (1, 2, 8):
        out = subprocess.run(
            [str(pgbench), "-n", "-c", str(clients), "-j", str(min(clients, 2)), "-T", "3",
             "-f", str(script), cluster.url(db)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        tps = [ln for ln in out.splitlines() if ln.startswith("tps")]
        rates[f"commits_per_s_{clients}"] = float(tps[0].split("=")[1].split()[0])
    where.cleanup()
    return rates


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def baseline_tree(rev: str, tmp: str) -> str:
    """A git worktree of `rev` (removed at exit), to put first on the workers' PYTHONPATH."""
    import atexit

    where = tempfile.mkdtemp(prefix="wflbench-base-", dir=tmp)
    repo = str(HERE.parent)
    subprocess.run(["git", "-C", repo, "worktree", "add", "-q", "--detach", where, rev],
                   check=True)  # fmt: skip
    atexit.register(subprocess.run, ["git", "-C", repo, "worktree", "remove", "--force", where],
                    check=False)  # fmt: skip
    return where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--workflows", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-dbos", action="store_true")
    ap.add_argument("--no-files", action="store_true")
    ap.add_argument("--baseline", metavar="REV", help="also measure wfl at REV (alternating)")
    ap.add_argument(
        "--profile",
        type=int,
        metavar="S",
        help="py-spy the workers for their first S seconds (raw stacks in --tmp)",
    )
    ap.add_argument(
        "--statements",
        action="store_true",
        help="print each round's top statements (pg_stat_statements)",
    )
    ap.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting (e.g. synchronous_commit=off: what it would give)",
    )
    ap.add_argument(
        "--commit-rate",
        action="store_true",
        help="also measure the server's commits/s with 1, 2, 8 connections (pgbench)",
    )
    ap.add_argument(
        "--modes",
        default="started",
        help="comma-separated: started (workload 1: runs started while warm workers serve), "
        "precreated (the runs exist before the workers start), supervised (started, through "
        "`wfl worker --processes N`)",
    )
    ap.add_argument("--supervised", action="store_true", help="adds the supervised mode")
    ap.add_argument(
        "--warm", type=int, default=4, help="warm-up runs per worker process (started modes)"
    )
    ap.add_argument("--quick", action="store_true", help="40 runs, one repetition")
    ap.add_argument("--tmp", default="/tmp")
    args = ap.parse_args()
    if args.quick:
        args.workflows, args.reps = 40, 1
    procs = [int(p) for p in args.procs.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    if args.supervised and "supervised" not in modes:
        modes.append("supervised")
    if not set(modes) <= set(MODE_LABEL):
        raise SystemExit(f"--modes: one of {', '.join(MODE_LABEL)}")
    if args.profile and shutil.which("py-spy") is None:
        raise SystemExit("--profile needs py-spy on PATH (pip install py-spy)")
    bindir = find_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
    variants: list[tuple[str, str | None]] = [("wfl", None)]
    if args.baseline:
        variants.append((f"base({args.baseline})", baseline_tree(args.baseline, args.tmp)))
    extra = " ".join(f"-c {o}" for o in args.setting)
    if args.statements:
        extra += " -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
    cluster = Cluster(bindir, fsync=True, options=extra)
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        cluster.init()
        db = "wflbench"
        cluster.create_db(db)
        log(f"PostgreSQL {bindir.parent.name} at {cluster.url(db)} (fsync on)")
        n = 0
        if args.commit_rate:
            rates = commit_rates(cluster, db, args.tmp)
            results["commit rate"] = [rates]
            log("server commits/s, 1/2/8 connections: " + " / ".join(
                f"{v:.0f}" for v in rates.values()))  # fmt: skip
        for rep in range(args.reps):
            # alternate orders, so that a drift in the machine's load favours none
            for p in procs if rep % 2 == 0 else procs[::-1]:
                for mode in modes:
                    mine = variants
                    for name, path in mine if rep % 2 == 0 else mine[::-1]:
                        n += 1
                        store = fresh_schema(cluster, db, f"r{n}")
                        r = wfl_round(cluster, store, p, args, path, mode)
                        label = f"{name}{MODE_LABEL[mode]} pg {p}"
                        results.setdefault(label, []).append(r)
                        log(f"rep {rep + 1}: {label}: " + brief(r))
            if not args.no_files:
                for p in procs[:2]:
                    d = tempfile.mkdtemp(prefix="wflbench-files-", dir=args.tmp)
                    r = wfl_round(cluster, d, p, args, None, "precreated")
                    subprocess.run(["rm", "-rf", d], check=False)
                    results.setdefault(f"wfl dir {p}", []).append(r)
                    log(f"rep {rep + 1}: wfl on a directory, {p} processes: " + brief(r))
            if not args.no_dbos:
                d = dbos_round(cluster, rep, args)
                if "error" in d:
                    log(f"rep {rep + 1}: DBOS failed: {d['error']}")
                else:
                    results.setdefault("DBOS pg", []).append(d)
                    log(f"rep {rep + 1}: DBOS on PostgreSQL: {d['steps_per_s']:.0f}")
    finally:
        cluster.destroy()
    report(results, args)


MODE_LABEL = {"started": "", "precreated": " pre", "supervised": " sup"}

COLUMNS = [("steps_per_s", "steps/s", "{:.0f}"), ("commits_per_step", "commits", "{:.2f}"),
           ("wal_syncs_per_step", "flushes", "{:.2f}"),
           ("worker_cpu_ms_per_step", "wkr ms", "{:.3f}"),
           ("server_wkr_cpu_ms_per_step", "srv:wkr", "{:.3f}"),
           ("server_start_cpu_ms_per_step", "srv:st", "{:.3f}"),
           ("server_bg_cpu_ms_per_step", "srv:bg", "{:.3f}"),
           ("starter_cpu_ms_per_step", "start ms", "{:.3f}"),
           ("cpu_ms_per_step", "all ms", "{:.3f}"),
           ("cores_busy", "cores", "{:.2f}"),
           ("starting_share", "starting", "{:.2f}"),
           ("top_share", "top", "{:.2f}"), ("idle_tail", "tail", "{:.2f}")]  # fmt: skip


def brief(r: dict[str, Any]) -> str:
    return "  ".join(
        f"{head} {fmt.format(r[k])}" for k, head, fmt in COLUMNS if r.get(k) is not None
    )


def report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    rates = results.pop("commit rate", [{}])[0]
    if rates:
        print("server commits/s (one-row INSERTs, pgbench), 1 / 2 / 8 connections: "
              + " / ".join(f"{v:.0f}" for v in rates.values()))  # fmt: skip
    med = {
        name: {k: median([r[k] for r in rs if r.get(k) is not None]) for k, _, _ in COLUMNS}
        for name, rs in results.items()
    }
    dbos = med.get("DBOS pg", {}).get("steps_per_s")
    print(f"\nworkload 1: {args.workflows} runs x {args.steps} steps, 8 at a time; medians of "
          f"{args.reps}; per step: commits and WAL flushes (whole server), CPU ms of the "
          "worker processes and of the server")  # fmt: skip
    print(f"{'':22}" + "".join(f"{head:>9}" for _, head, _ in COLUMNS) + f"{'vs DBOS':>9}"
          f"{'vs 1 proc':>10}")  # fmt: skip
    for name, m in med.items():
        cells = "".join(f"{fmt.format(m[k]) if m[k] is not None else '':>9}"
                        for k, _, fmt in COLUMNS)  # fmt: skip
        v = m["steps_per_s"] or 0.0
        vs_dbos = f"{v / dbos:.1f}x" if dbos and name != "DBOS pg" else ""
        one = med.get(name.rsplit(" ", 1)[0] + " 1", {}).get("steps_per_s")
        vs_one = f"{v / one:.2f}x" if one and " pg " in name else ""
        print(f"{name:22}{cells}{vs_dbos:>9}{vs_one:>10}")
    print("\nsteps/s of each repetition (and, for N processes, N vs 1 in the same repetition):")
    for name, rs in results.items():
        each = [r["steps_per_s"] for r in rs if "steps_per_s" in r]
        line = f"  {name:22}" + " / ".join(f"{x:.0f}" for x in each)
        ones = results.get(name.rsplit(" ", 1)[0] + " 1")
        if ones is not None and " pg " in name and not name.endswith(" 1"):
            ratios = [x / o["steps_per_s"] for x, o in zip(each, ones, strict=False)]
            line += "   vs 1: " + " / ".join(f"{x:.2f}" for x in ratios)
            line += f" (median {statistics.median(ratios):.2f})" if ratios else ""
        print(line)
    print("JSON " + json.dumps({"medians": med, "all": results, "reps": args.reps, **rates,
                                "workflows": args.workflows, "steps": args.steps}))  # fmt: skip


if __name__ == "__main__":
    main()
