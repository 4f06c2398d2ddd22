#!/usr/bin/env python3
"""wfl's side of the benchmark: one workload phase per process, driven by bench/run.py.

    python bench/wfl_side.py PHASE '{"option": value, ...}'

prints progress on stderr and one line `RESULT {json}` on stdout. Each phase uses a fresh
journal directory under the `tmp` option (default /tmp), removed afterwards, with wfl's default
durable settings (every record fsynced before the worker acts on it). The worker runs in this
process (like DBOS, which runs workflows in the caller's process); clients that must be "another
process" (pick-up latency, CLI) are real subprocesses.

Phases: throughput nsteps timer pickup cli sleepers disk, and the helpers drive / scan / starter
that `sleepers` and `pickup` start as subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FLOWS = str(HERE / "flows.py")
sys.path.insert(0, str(HERE))

import flows  # noqa: E402  (bench/flows.py: the worker loads this very module object)

from wfl import Client  # noqa: E402
from wfl.worker import Worker, WorkerEvent  # noqa: E402

# -- small helpers ----------------------------------------------------------------------------

FSYNCS = [0]


def _count_fsyncs() -> None:
    """Count os.fsync / os.fdatasync calls (wfl looks them up on `os` at call time)."""
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        FSYNCS[0] += 1
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        FSYNCS[0] += 1
        real_fdatasync(fd)

    os.fsync = fsync  # type: ignore[assignment]
    os.fdatasync = fdatasync  # type: ignore[assignment]
    try:  # a worker syncing its group commits through Linux AIO (wfl/aio.py): one per journal
        from wfl import aio
    except ImportError:  # (an older wfl under --baseline)
        return
    real_submit = aio.AioSync.submit

    def submit(self: Any, fds: Any, done: Any) -> None:
        FSYNCS[0] += len(fds)
        real_submit(self, fds, done)

    aio.AioSync.submit = submit  # type: ignore[method-assign]


def log(msg: str) -> None:
    print(f"#   {msg}", file=sys.stderr, flush=True)


class ErrorLog(logging.Handler):
    """Counts the errors wfl logs (a worker logs them and goes on; the bench shows them)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: list[str] = []
        logging.getLogger("wfl").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(record.getMessage()[:200])

    def summary(self) -> dict[str, Any]:
        return {"logged_errors": self.count, "first_errors": self.first}


def rss_mb() -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of this process, MB."""
    out: dict[str, float] = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_rss_mb": out.get("VmHWM", 0.0)}


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


def wfl_cli() -> str | None:
    """The `wfl` console script of this interpreter's environment."""
    cand = Path(sys.executable).parent / "wfl"
    if cand.exists():
        return str(cand)
    return shutil.which("wfl")


def timed_cmd(cmd: list[str], reps: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Median wall time of a whole process; one untimed warm-up run first."""
    times = []
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if first.returncode != 0:
        err = (first.stderr.strip().splitlines() or [f"exit {first.returncode}"])[-1]
        return {"error": f"`{' '.join(Path(c).name for c in cmd[:2])}` failed: {err[:200]}"}
    for _ in range(reps):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, env=env, timeout=300)
        times.append((time.perf_counter() - t0) * 1e3)
        if p.returncode != 0:
            return {"error": f"exit {p.returncode}: {p.stderr.decode()[-200:]}"}
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "reps": reps,
        "stdout_bytes": len(first.stdout),
    }


def fresh_dir(o: dict[str, Any], name: str) -> str:
    return tempfile.mkdtemp(prefix=f"wflbench-{name}-", dir=o.get("tmp", "/tmp"))


def warm_up(d: str, wf: Any, args: dict[str, Any], n: int = 3) -> None:
    """A few runs through a throwaway worker: imports, flow loading, first-call costs."""
    client = Client(d)
    for _ in range(n):
        client.start(wf, args)
    Worker(d, listen=False).run_sync(once=True)


async def drive_until(
    worker: Worker, expected: Callable[[], int], finished: list[float], timeout: float
) -> bool:
    """Run `worker` until `expected()` runs have finished; False on timeout."""
    loop = asyncio.get_running_loop()
    timed_out = [False]

    def give_up() -> None:
        timed_out[0] = True
        worker.stop()

    handle = loop.call_later(timeout, give_up)
    await worker.run(until=lambda: len(finished) >= expected())
    handle.cancel()
    return not timed_out[0]


def finish_recorder(finished: list[float]) -> Callable[[WorkerEvent], None]:
    def on_event(ev: WorkerEvent) -> None:
        if ev.kind == "run_finished":
            finished.append(time.perf_counter())

    return on_event


def check_completed(client: Client, ids: list[str]) -> list[str]:
    bad = []
    for rid in ids:
        st = client.status(rid)
        if st.state != "completed":
            bad.append(f"{rid}: {st.state} {st.error}")
    return bad


# -- workload 1: throughput -------------------------------------------------------------------


def phase_throughput(o: dict[str, Any]) -> dict[str, Any]:
    """W workflows x S steps, 8 steps at a time (flows.workflow max_parallelism=8).

    precreated=False (the headline figure, like DBOS's queue8 which counts its enqueue time):
    the worker is up and idle, a client thread starts the W runs (each start is a durable
    journal creation + a wake-up datagram) and the clock stops when the last run finished.
    precreated=True: the runs exist before the worker starts; only the worker is timed."""
    d = fresh_dir(o, "tp")
    W, S = o["workflows"], o["steps"]
    wf = getattr(flows, o.get("workflow", "steps"))
    try:
        warm_up(d, wf, {"n": S})
        client = Client(d)
        finished: list[float] = []
        ids: list[str] = []
        if o.get("precreated"):
            ids = [client.start(wf, {"n": S}) for _ in range(W)]
        # when each run was created and first loaded: a start whose wake-up is lost shows
        # as a run picked up late (found by the worker's periodic rescan instead)
        created: dict[str, float] = {}
        loaded: dict[str, float] = {}
        record_finish = finish_recorder(finished)

        def on_event(ev: WorkerEvent) -> None:
            if ev.kind == "loaded":
                loaded.setdefault(ev.run_id, time.perf_counter())
            record_finish(ev)

        def starter() -> None:
            for _ in range(W):
                rid = client.start(wf, {"n": S})
                created[rid] = time.perf_counter()
                ids.append(rid)

        worker = Worker(d, on_event=on_event, listen=not o.get("precreated"))

        cpu0 = [0.0]

        async def go() -> float:
            task = asyncio.create_task(drive_until(worker, lambda: W, finished, o["timeout"]))
            await asyncio.sleep(0.05)  # the worker is up and idle
            FSYNCS[0] = 0
            cpu0[0] = time.process_time()
            t0 = time.perf_counter()
            if not o.get("precreated"):
                threading.Thread(target=starter).start()
            if not await task:
                raise RuntimeError(f"timed out: {len(finished)}/{W} runs finished")
            return t0

        t0 = asyncio.run(go())
        cpu = time.process_time() - cpu0[0]  # this process: the worker, and the client thread
        dt = finished[-1] - t0
        fsyncs = FSYNCS[0]
        bad = check_completed(client, ids)
        if bad:
            raise RuntimeError(f"{len(bad)} runs did not complete: {bad[:2]}")
        return {
            "workflows": W,
            "steps_per_wf": S,
            "workflow": wf.name,
            "precreated": bool(o.get("precreated")),
            "seconds": dt,
            "wf_per_s": W / dt,
            "steps_per_s": W * S / dt,
            "fsyncs": fsyncs,
            "fsyncs_per_step": fsyncs / (W * S),
            # CPU of the whole process per step, µs (with the client's starts unless precreated)
            "cpu_us_per_step": cpu / (W * S) * 1e6,
            **pickup_stats(created, loaded),
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


def pickup_stats(created: dict[str, float], loaded: dict[str, float]) -> dict[str, Any]:
    """Start-to-load delays of runs started while the worker ran (ms)."""
    delays = [(loaded[r] - t) * 1e3 for r, t in created.items() if r in loaded]
    if not delays:
        return {}
    return {
        "load_delay_ms_max": max(delays),
        "load_delay_ms_median": statistics.median(delays),
        "runs_loaded_over_1s_late": sum(1 for x in delays if x > 1000),
    }


# -- workload 2: one long run -----------------------------------------------------------------


def phase_nsteps(o: dict[str, Any]) -> dict[str, Any]:
    d = fresh_dir(o, "ns")
    rows = []
    try:
        warm_up(d, flows.steps_timed, {"n": 10})
        client = Client(d)
        for n in o["sizes"]:
            finished: list[float] = []
            worker = Worker(d, on_event=finish_recorder(finished), listen=False)
            FSYNCS[0] = 0
            t0 = time.perf_counter()
            rid = client.start(flows.steps_timed, {"n": n})

            async def go(worker: Worker = worker, finished: list[float] = finished) -> bool:
                return await drive_until(worker, lambda: 1, finished, o["timeout"])

            if not asyncio.run(go()):
                raise RuntimeError(f"N={n}: timed out")
            dt = finished[-1] - t0
            fsyncs = FSYNCS[0]
            bad = check_completed(client, [rid])
            if bad:
                raise RuntimeError(bad[0])
            times = list(flows.STEP_TIMES)
            k = min(100, n)
            rows.append(
                {
                    "n": n,
                    "seconds": dt,
                    "ms_per_step": dt / n * 1e3,
                    "steps_per_s": n / dt,
                    "median_ms_first100": statistics.median(times[:k]) * 1e3,
                    "median_ms_last100": statistics.median(times[-k:]) * 1e3,
                    "fsyncs_per_step": fsyncs / n,
                }
            )
            log(f"N={n}: {dt / n * 1e3:.3f} ms/step")
        return {"rows": rows}
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- workload 3: timer accuracy ---------------------------------------------------------------


def phase_timer(o: dict[str, Any]) -> dict[str, Any]:
    """R runs, started `stagger` s apart, each scheduling a step run_after=delay; lateness of
    the step body after the target (both ends are time.time() in this process)."""
    d = fresh_dir(o, "tm")
    R, stagger, delay = o["reps"], o["stagger"], o["delay"]
    try:
        warm_up(d, flows.first_step, {}, n=2)
        client = Client(d)
        finished: list[float] = []
        ids: list[str] = []
        worker = Worker(d, on_event=finish_recorder(finished))

        def starter() -> None:
            for _ in range(R):
                ids.append(client.start(flows.timer, {"delay": delay}))
                time.sleep(stagger)

        async def go() -> None:
            task = asyncio.create_task(drive_until(worker, lambda: R, finished, o["timeout"]))
            await asyncio.sleep(0.05)
            threading.Thread(target=starter).start()
            if not await task:
                raise RuntimeError(f"timed out: {len(finished)}/{R} runs finished")

        asyncio.run(go())
        late = []
        for rid in ids:
            before, after = client.wait(rid, timeout=5)
            late.append((after - before - delay) * 1e3)
        return {
            "delay_s": delay,
            "stagger_s": stagger,
            "lateness_ms": late,
            "lateness": summary(late),
        }
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- workload 4: pick-up latency --------------------------------------------------------------


def phase_starter(o: dict[str, Any]) -> dict[str, Any]:
    """Subprocess of `pickup`: Client.start R runs `gap` s apart; wall clock just before each."""
    client = Client(o["dir"])
    out = []
    for _ in range(o["reps"]):
        time.sleep(o["gap"])
        t = time.time()
        rid = client.start(FLOWS + ":first_step", {})
        out.append([rid, t])
    return {"starts": out}


def phase_pickup(o: dict[str, Any]) -> dict[str, Any]:
    """A worker idles in this process; another process starts runs of one step. Latency =
    time.time() in the step body minus time.time() just before the start call (same clock).
    `client`: a Python process calling Client.start (the engine's latency); `cli`: a whole
    `wfl start` process per run, timed from before it is spawned."""
    d = fresh_dir(o, "pu")
    R, Rc, gap = o["reps"], o["cli_reps"], o["gap"]
    try:
        warm_up(d, flows.first_step, {}, n=2)
        client = Client(d)
        finished: list[float] = []
        worker = Worker(d, on_event=finish_recorder(finished))
        starts: dict[str, list[Any]] = {"client": [], "cli": []}
        errors: list[str] = []
        expected = [10**9]
        wfl = wfl_cli()

        def feeder() -> None:
            try:
                opts = json.dumps({"dir": d, "reps": R, "gap": gap})
                p = subprocess.run(
                    [sys.executable, __file__, "starter", opts],
                    capture_output=True,
                    text=True,
                    timeout=o["timeout"],
                )
                res = _result_of(p)
                if "error" in res:
                    errors.append("client: " + res["error"])
                else:
                    starts["client"] = res["starts"]
                for _ in range(Rc if wfl else 0):
                    time.sleep(gap)
                    t = time.time()
                    q = subprocess.run(
                        [wfl or "wfl", "start", FLOWS + ":first_step", "--dir", d],
                        capture_output=True,
                        text=True,
                        timeout=60,
                    )
                    if q.returncode != 0:
                        err = (q.stderr.strip().splitlines() or ["?"])[-1]
                        errors.append(f"`wfl start` exit {q.returncode}: {err[:200]}")
                        break
                    starts["cli"].append([q.stdout.strip(), t])
                if not wfl:
                    errors.append("no `wfl` console script found")
            finally:
                expected[0] = len(starts["client"]) + len(starts["cli"])

        async def go() -> None:
            task = asyncio.create_task(
                drive_until(worker, lambda: expected[0], finished, o["timeout"])
            )
            await asyncio.sleep(0.2)  # the worker is up and idle
            await asyncio.to_thread(feeder)
            worker.activity()  # `expected` is known now
            if not await task:
                raise RuntimeError(f"timed out: {len(finished)}/{expected[0]} finished")

        asyncio.run(go())
        out: dict[str, Any] = {"gap_s": gap, "errors": errors}
        for mode, pairs in starts.items():
            lat = [(client.wait(rid, timeout=5) - t) * 1e3 for rid, t in pairs]
            out[mode] = {"latency_ms": lat, **summary(lat)}
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- workload 5: CLI start-up -----------------------------------------------------------------


def phase_cli(o: dict[str, Any]) -> dict[str, Any]:
    d = fresh_dir(o, "cli")
    R = o["reps"]
    try:
        Client(d).start(flows.first_step, {})  # something to list
        py = sys.executable
        out: dict[str, Any] = {
            "python_pass": timed_cmd([py, "-c", "pass"], R),
            "python_import_wfl": timed_cmd([py, "-c", "import wfl"], R),
        }
        wfl = wfl_cli()
        if wfl is None:
            out["wfl_start"] = out["wfl_status"] = {"error": "no `wfl` console script found"}
        else:
            out["wfl_start"] = timed_cmd([wfl, "start", FLOWS + ":first_step", "--dir", d], R)
            out["wfl_status"] = timed_cmd([wfl, "status", "--dir", d], R)
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- workload 6: many sleeping runs -----------------------------------------------------------


def phase_drive(o: dict[str, Any]) -> dict[str, Any]:
    """Subprocess of `sleepers`: one worker drives every due run until nothing is due now
    (`wfl worker --once`); all sleepers end up evicted, waiting on a 30-day timer."""
    evicted = [0]

    def on_event(ev: WorkerEvent) -> None:
        if ev.kind == "evicted":
            evicted[0] += 1

    errors = ErrorLog()
    before = rss_mb()
    t0 = time.perf_counter()
    w = Worker(o["dir"], listen=False, on_event=on_event)
    w.run_sync(once=True)
    return {
        "seconds": time.perf_counter() - t0,
        "evicted": evicted[0],
        "rss_before": before,
        **rss_mb(),
        **errors.summary(),
    }


def phase_scan(o: dict[str, Any]) -> dict[str, Any]:
    """Subprocess of `sleepers`: a fresh worker starts over the directory; scan time and RSS
    once it has read every journal and holds a timer per sleeping run."""
    before = rss_mb()
    w = Worker(o["dir"])

    async def go() -> dict[str, Any]:
        t0 = time.perf_counter()
        task = asyncio.create_task(w.run())
        await asyncio.sleep(0)  # run() scans synchronously before its first wait
        scan_s = time.perf_counter() - t0
        await asyncio.sleep(o.get("hold", 1.0))
        after = rss_mb()
        timers = len(getattr(w, "_waking", {}))
        live = len(w.drivers)
        w.stop()
        await task
        return {"scan_seconds": scan_s, "timers": timers, "live_drivers": live, **after}

    res = asyncio.run(go())
    res["rss_before"] = before
    return res


def phase_sleepers(o: dict[str, Any]) -> dict[str, Any]:
    """N runs put to sleep for 30 days: the RSS of the worker that drives them there and of a
    fresh one holding them; `wfl status` (the default view: newest 50 + "N more") and
    `wfl status --json` (all N) as whole processes; a `wfl worker` holding them: its CPU
    over `idle_seconds` of sleep and its RSS. With o["baseline"] (a checkout of an older
    wfl), the commands and the idle worker run on both, alternating, each on its own copy
    of the directory (the index's format may differ)."""
    d = fresh_dir(o, "sl")
    N = o["sleepers"]
    base_dir = d + "-baseline"
    try:
        client = Client(d)
        t0 = time.perf_counter()
        for _ in range(N):
            client.start(flows.sleeper, {"days": 30.0})
        create_s = time.perf_counter() - t0
        log(f"{N} runs created in {create_s:.1f} s")
        out: dict[str, Any] = {
            "sleepers": N,
            "create_seconds": create_s,
            "starts_per_s": N / create_s,
        }
        out["drive"] = _sub("drive", {"dir": d}, o["timeout"])
        log(f"driven to sleep: {out['drive']}")
        out["scan"] = _sub("scan", {"dir": d, "hold": 1.0}, o["timeout"])
        log(f"fresh worker: {out['scan']}")
        sides = {"new": str(HERE.parent)}
        if o.get("baseline"):
            sides["baseline"] = o["baseline"]
            shutil.copytree(d, base_dir)
        for root in sides.values():  # as pip install does; this machine sets
            _compile(root)  # PYTHONDONTWRITEBYTECODE, which would compile wfl every time
        dirs = {"new": d, "baseline": base_dir}
        commands = {"status_default": ["status"], "status_json": ["status", "--json"]}
        for name, args in commands.items():
            out[name] = _timed_sides(sides, dirs, args, o["status_reps"])
            log(f"{name}: {out[name]}")
        idle_s = o.get("idle_seconds", 30.0)
        out["idle"] = {side: _idle_worker(root, dirs[side], idle_s) for side, root in sides.items()}
        log(f"idle worker: {out['idle']}")
        t0 = time.perf_counter()
        n50 = len(client.list(limit=50))
        out["client_list50_ms"] = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        nall = len(client.list())
        out["client_list_all_ms"] = (time.perf_counter() - t0) * 1e3
        out["listed"] = [n50, nall]
        return out
    finally:
        shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(base_dir, ignore_errors=True)


_MAIN = "import sys; from wfl.entry import main; sys.argv[0] = 'wfl'; main()"


def _side_env(root: str, directory: str) -> dict[str, str]:
    """`wfl` of the checkout `root` (first on the path: ahead of the editable install)."""
    env = {k: v for k, v in os.environ.items() if k not in ("WFL_DIR", "WFL_STORE")}
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    env["WFL_DIR"] = directory
    return env


def _compile(root: str) -> None:
    import compileall

    compileall.compile_dir(os.path.join(root, "wfl"), quiet=1)


def _timed_sides(
    sides: dict[str, str], dirs: dict[str, str], args: list[str], reps: int
) -> dict[str, Any]:
    """Median wall and CPU time of `wfl ARGS` as a whole process on each side, the sides
    alternating (one untimed run each first: it brings the index up to date)."""
    import resource

    wall: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    size: dict[str, int] = {}
    for rep in range(reps + 1):
        for side, root in sides.items():
            env = _side_env(root, dirs[side])
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-c", _MAIN, *args], capture_output=True,
                               env=env, timeout=300, cwd="/")  # fmt: skip
            dt = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if p.returncode != 0:
                return {"error": f"{side}: exit {p.returncode}: {p.stderr.decode()[-200:]}"}
            size[side] = len(p.stdout)
            if rep:
                wall[side].append(dt * 1e3)
                cpu[side].append(
                    (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e3
                )
    return {
        side: {
            "median_ms": statistics.median(wall[side]),
            "min_ms": min(wall[side]),
            "cpu_median_ms": statistics.median(cpu[side]),
            "reps": reps,
            "stdout_bytes": size[side],
        }
        for side in sides
    }


def _tree(pid: int) -> list[int]:
    """The process and its descendants (`wfl worker` runs one process per core)."""
    found = [pid]
    for p in found:
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds of the process tree (user + system)."""
    total = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _proc_mem_mb(pid: int) -> dict[str, float]:
    """RSS and peak RSS summed over the process tree, MB, how many processes, and their PSS
    (forked processes share pages, which each one's RSS counts whole)."""
    found = {"VmRSS": 0.0, "VmHWM": 0.0, "Pss": 0.0}
    procs = _tree(pid)
    for p in procs:
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
            lines += Path(f"/proc/{p}/smaps_rollup").read_text().splitlines()
            for line in lines:
                key, _, value = line.partition(":")
                if key in found:
                    found[key] += int(value.split()[0]) / 1024
    return {"rss_mb": found["VmRSS"], "peak_rss_mb": found["VmHWM"], "pss_mb": found["Pss"],
            "processes": len(procs)}  # fmt: skip


def _idle_worker(root: str, directory: str, seconds: float) -> dict[str, Any]:
    """A `wfl worker` over the sleeping runs (as started: its processes, one per core from
    the version with --processes, all counted): once its start-up is over (no CPU used for a
    second), the CPU it uses in `seconds` while every run sleeps, and its RSS."""
    p = subprocess.Popen([sys.executable, "-c", _MAIN, "worker"], env=_side_env(root, directory),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")  # fmt: skip
    try:
        t0 = time.perf_counter()
        last = -1.0
        while time.perf_counter() - t0 < 120:
            time.sleep(1.0)
            used = _proc_cpu_s(p.pid)
            if used == last:
                break
            last = used
        start_cpu, start = _proc_cpu_s(p.pid), time.perf_counter()
        time.sleep(seconds)
        idle_cpu, idle_wall = _proc_cpu_s(p.pid) - start_cpu, time.perf_counter() - start
        return {
            "startup_cpu_s": start_cpu,
            "idle_seconds": idle_wall,
            "idle_cpu_ms": idle_cpu * 1e3,
            "idle_cpu_percent": 100 * idle_cpu / idle_wall,
            **_proc_mem_mb(p.pid),
        }
    finally:
        p.terminate()
        p.wait(timeout=60)


# -- workload 7: disk limits ------------------------------------------------------------------


def phase_disk(o: dict[str, Any]) -> dict[str, Any]:
    import disk  # bench/disk.py

    return disk.measure(o.get("tmp", "/tmp"), o["seconds"])


# -- plumbing ---------------------------------------------------------------------------------


def _result_of(p: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or "").strip().splitlines()[-3:]
        return {"error": f"exit {p.returncode}: " + " | ".join(tail)[-600:]}
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def _sub(phase: str, opts: dict[str, Any], timeout: float) -> dict[str, Any]:
    p = subprocess.run(
        [sys.executable, __file__, phase, json.dumps(opts)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return _result_of(p)


def phase_throughput_procs(o: dict[str, Any]) -> dict[str, Any]:
    """Workload 1 through the real command: `wfl worker --processes N` (`procs`, default 2)
    is up and idle, a client thread here starts the W runs (as in `throughput`), and the clock
    stops at the worker's last `run_finished` line (off a terminal it writes one line per
    event; this process reads them as they come). `share_delay` (seconds; the children read
    WFL_SHARE_DELAY) measures other splits: 0 is every process racing for every run."""
    d = fresh_dir(o, "tpp")
    W, S, procs = o["workflows"], o["steps"], o.get("procs", 2)
    wf = getattr(flows, o.get("workflow", "steps"))
    cli = wfl_cli()
    if cli is None:
        raise RuntimeError("the wfl command is not installed")
    env = dict(os.environ)
    if "share_delay" in o:
        env["WFL_SHARE_DELAY"] = str(o["share_delay"])
    err = tempfile.TemporaryFile()  # noqa: SIM115 - the worker's stderr, read on failure
    worker = subprocess.Popen(
        [cli, "worker", "--processes", str(procs), "--dir", d],
        stdout=subprocess.PIPE, stderr=err, text=True, cwd=str(HERE), env=env,
    )  # fmt: skip
    assert worker.stdout is not None
    lines = worker.stdout
    try:
        client = Client(d)
        deadline = time.monotonic() + 60
        sockets = Path(d) / "workers"  # each process's wake-up socket: it listens
        while not sockets.exists() or len(os.listdir(sockets)) < procs:
            if time.monotonic() > deadline or worker.poll() is not None:
                err.seek(0)
                said = err.read().decode(errors="replace").strip()[-300:]
                raise RuntimeError(f"the worker's processes did not start: {said}")
            time.sleep(0.01)

        def wait_finished(ids: set[str]) -> float:
            """Read the worker's lines until every run of `ids` finished; when the last did."""
            left = set(ids)
            end = time.perf_counter()
            for line in lines:
                if " run_finished " in line:
                    parts = line.split()
                    if parts[1] in left:
                        left.discard(parts[1])
                        end = time.perf_counter()
                        if not left:
                            return end
            raise RuntimeError(f"the worker ended with {len(left)} runs unfinished")

        # warm-up through the worker: each process loads the flow on its first run
        wait_finished({client.start(wf, {"n": S}) for _ in range(4 * procs)})
        ids: list[str] = []

        def starter() -> None:
            for _ in range(W):
                ids.append(client.start(wf, {"n": S}))

        cpu_worker, cpu_here = _proc_cpu_s(worker.pid), time.process_time()
        t0 = time.perf_counter()
        thread = threading.Thread(target=starter)
        thread.start()
        # the ids are not all known yet: count run_finished lines of runs started after t0
        seen: set[str] = set()
        end = t0
        for line in lines:
            if " run_finished " in line:
                seen.add(line.split()[1])
                end = time.perf_counter()
                if len(seen) >= W:
                    break
        thread.join()
        if set(ids) != seen:
            raise RuntimeError(f"finished runs are not the started ones ({len(seen)}/{W})")
        dt = end - t0
        # CPU per step, µs: the worker's processes (ticks of 10 ms: read over the whole run)
        # and this one (the client's starts, reading the worker's lines)
        cpu_worker = _proc_cpu_s(worker.pid) - cpu_worker
        cpu_here = time.process_time() - cpu_here
        bad = check_completed(client, ids)
        if bad:
            raise RuntimeError(f"{len(bad)} runs did not complete: {bad[:2]}")
        return {"procs": procs, "seconds": dt, "steps_per_s": W * S / dt, "wf_per_s": W / dt,
                "load": os.getloadavg()[0], "worker_cpu_us_per_step": cpu_worker / (W * S) * 1e6,
                "client_cpu_us_per_step": cpu_here / (W * S) * 1e6}  # fmt: skip
    finally:
        worker.terminate()
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        shutil.rmtree(d, ignore_errors=True)


PHASES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "throughput": phase_throughput,
    "throughput_procs": phase_throughput_procs,
    "nsteps": phase_nsteps,
    "timer": phase_timer,
    "pickup": phase_pickup,
    "starter": phase_starter,
    "cli": phase_cli,
    "sleepers": phase_sleepers,
    "drive": phase_drive,
    "scan": phase_scan,
    "disk": phase_disk,
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in PHASES:
        raise SystemExit(f"usage: wfl_side.py {{{','.join(PHASES)}}} [JSON options]")
    opts = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    opts.setdefault("timeout", 600.0)
    _count_fsyncs()
    res = PHASES[sys.argv[1]](opts)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
