#!/usr/bin/env python3
"""Peer baseline: Restate (server + Python SDK), measured on this machine.

(A copy of ../shared/bench/restate_bench.py, lint-fixed, so that bench/run.py works from a
fresh clone; bench/run.py runs it with `--peer restate`.)

Setup (all in /tmp; nothing machine-specific):

    mkdir -p /tmp/restate-npm && cd /tmp/restate-npm && npm init -y \\
        && npm install @restatedev/restate-server          # server binary
    python3.11 -m venv /tmp/peers-venv
    /tmp/peers-venv/bin/pip install restate-sdk hypercorn httpx
    /tmp/peers-venv/bin/python restate_bench.py            # ~1-2 min

The server binary is looked up at --restate-server (default
/tmp/restate-npm/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server).

What the script does
  * writes a config file and starts `restate-server` with a fresh base dir in a
    mkdtemp under --tmp, every listener on 127.0.0.1 (node, admin, ingress),
    TCP only, telemetry and web UI off; all other settings are Restate's
    defaults (RocksDB WAL fsync on: see --dump-config);
  * starts this same file as a second process (`--serve PORT`) that serves the
    Restate service `Bench` with hypercorn (HTTP/2 cleartext, bidi stream) on
    127.0.0.1;
  * registers that deployment with `POST /deployments` on the admin API;
  * drives the workloads through the ingress HTTP API with httpx (the request
    returns when the invocation has finished);
  * stops the service and the server (by PID) and removes the base dir.

Phases (the same workloads as dbos_bench.py)
  seq       W invocations x S trivial `ctx.run` steps, one after another
  threads8  the same W invocations from 8 client threads (8 in flight)
  nsteps    one invocation of N sequential steps for each N in --sizes; the
            handler times each `await ctx.run(...)` (first and last 100)
  sleep     invocation: step, `ctx.sleep(1s)`, step; lateness of the second
            step body after the 1 s target, --sleep-reps times
  first     start-to-first-step: client wall clock at POST -> time.time() in
            the body of the invocation's first step (same host clock), and
            the round trip of that one-step invocation; --first-reps times

Results: one JSON line (prefixed "JSON ") and a short table.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta

HERE = os.path.abspath(__file__)
DEFAULT_SERVER = (
    "/tmp/restate-npm/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"
)


# --------------------------------------------------------------------------
# service side (child process): the Restate service, served by hypercorn
# --------------------------------------------------------------------------


def serve(port: int) -> None:
    import asyncio
    import logging

    import restate
    from hypercorn.asyncio import serve as hserve
    from hypercorn.config import Config

    logging.getLogger().setLevel(logging.WARNING)

    bench = restate.Service("Bench")

    def trivial_step(i: int) -> dict:
        return {"i": i, "ok": True, "s": "hello"}

    def now() -> float:  # run_typed needs a signature; time.time has none
        return time.time()

    @bench.handler()
    async def steps(ctx: restate.Context, n: int) -> int:
        for i in range(n):
            await ctx.run_typed("step", trivial_step, i=i)
        return n

    @bench.handler()
    async def steps_timed(ctx: restate.Context, n: int) -> dict:
        # per-step wall time, measured around each durable step call.
        # (In-memory list: only meaningful if the invocation is not replayed;
        # `replayed_steps` counts steps that came back in under 20 us.)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await ctx.run_typed("step", trivial_step, i=i)
            times.append(time.perf_counter() - t0)
        k = min(100, n)
        return {
            "n": n,
            "first": times[:k],
            "last": times[-k:],
            "all_median": statistics.median(times),
            "replayed_steps": sum(1 for t in times if t < 20e-6),
        }

    @bench.handler()
    async def sleepy(ctx: restate.Context, secs: float) -> dict:
        before = await ctx.run_typed("before", now)
        t0 = time.time()  # not durable: re-evaluated if the handler replays
        await ctx.sleep(timedelta(seconds=secs))
        after = await ctx.run_typed("stamp", now)
        return {"before_step": before, "t0": t0, "after": after}

    @bench.handler()
    async def first(ctx: restate.Context, _x: int) -> float:
        return await ctx.run_typed("first", now)

    app = restate.app(services=[bench])
    cfg = Config()
    cfg.bind = [f"127.0.0.1:{port}"]
    cfg.loglevel = "WARNING"
    cfg.accesslog = None
    cfg.graceful_timeout = 1.0  # Restate keeps its HTTP/2 connection open
    asyncio.run(hserve(app, cfg))


# --------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    import httpx

    t_end = time.time() + timeout
    last = None
    while time.time() < t_end:
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code < 500:
                return
        except Exception as e:
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} not up after {timeout}s: {last!r}")


def start_server(args, base: str) -> tuple:
    node, admin, ingress = free_port(), free_port(), free_port()
    cfg = os.path.join(base, "restate.toml")
    with open(cfg, "w") as f:
        f.write(f"""cluster-name = "wflbench"
node-name = "n1"
disable-telemetry = true
listen-mode = "tcp"
bind-address = "127.0.0.1:{node}"
advertised-address = "http://127.0.0.1:{node}/"

[admin]
bind-address = "127.0.0.1:{admin}"
advertised-admin-endpoint = "http://127.0.0.1:{admin}/"
disable-web-ui = true

[ingress]
bind-address = "127.0.0.1:{ingress}"
advertised-ingress-endpoint = "http://127.0.0.1:{ingress}/"
""")
    log = open(os.path.join(base, "server.log"), "w")  # noqa: SIM115  (the server's stdout)
    cmd = [
        args.restate_server,
        "--config-file",
        cfg,
        "--base-dir",
        os.path.join(base, "data"),
        "--no-logo",
    ]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_http(f"http://127.0.0.1:{admin}/health")
    wait_http(f"http://127.0.0.1:{ingress}/restate/health")
    return p, admin, ingress, time.perf_counter() - t0


def stop(p: subprocess.Popen, name: str) -> None:
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            print(f"# {name} did not stop on SIGTERM, killing", file=sys.stderr)
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


def phase_seq(cli, url: str, W: int, S: int) -> dict:
    t0 = time.perf_counter()
    for _ in range(W):
        r = cli.post(url, json=S)
        r.raise_for_status()
    dt = time.perf_counter() - t0
    return {
        "workflows": W,
        "steps_per_wf": S,
        "seconds": dt,
        "wf_per_s": W / dt,
        "steps_per_s": W * S / dt,
        "ms_per_wf": dt / W * 1e3,
    }


def phase_threads(url: str, W: int, S: int, C: int, timeout: float) -> dict:
    import httpx

    per = [W // C + (1 if k < W % C else 0) for k in range(C)]
    errs: list = []
    clients = [httpx.Client(timeout=timeout) for _ in range(C)]

    def worker(cli, n: int) -> None:
        try:
            for _ in range(n):
                r = cli.post(url, json=S)
                r.raise_for_status()
        except Exception as e:
            errs.append(repr(e))

    ths = [threading.Thread(target=worker, args=(c, n)) for c, n in zip(clients, per, strict=False)]
    t0 = time.perf_counter()
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    dt = time.perf_counter() - t0
    for c in clients:
        c.close()
    return {
        "workflows": W,
        "steps_per_wf": S,
        "concurrency": C,
        "seconds": dt,
        "wf_per_s": W / dt,
        "steps_per_s": W * S / dt,
        "errors": errs[:3],
    }


def run_bench(args) -> dict:
    import httpx

    base = tempfile.mkdtemp(prefix="restatebench-", dir=args.tmp)
    out: dict = {}
    server = svc = None
    try:
        server, admin, ingress, t_up = start_server(args, base)
        out["server_start_s"] = t_up
        svc_port = free_port()
        svc_log = open(os.path.join(base, "service.log"), "w")  # noqa: SIM115
        svc = subprocess.Popen(
            [sys.executable, HERE, "--serve", str(svc_port)],
            stdout=svc_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # wait until hypercorn accepts connections
        t_end = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", svc_port), 0.5).close()
                break
            except OSError:
                if time.time() > t_end or svc.poll() is not None:
                    raise RuntimeError("service did not start; see service.log") from None
                time.sleep(0.1)
        r = httpx.post(
            f"http://127.0.0.1:{admin}/deployments",
            json={"uri": f"http://127.0.0.1:{svc_port}"},
            timeout=30,
        )
        if r.status_code >= 300:
            raise RuntimeError(f"register failed: {r.status_code} {r.text}")
        out["deployment"] = r.json().get("id")
        ing = f"http://127.0.0.1:{ingress}/Bench"
        cli = httpx.Client(timeout=args.timeout)
        # the new deployment may take a moment to reach the ingress
        t_end = time.time() + 30
        while True:
            try:
                r = cli.post(f"{ing}/steps", json=1)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > t_end:
                raise RuntimeError(f"ingress not routing: {r.status_code} {r.text}")
            time.sleep(0.2)
        # warm-up (not timed)
        for _ in range(3):
            cli.post(f"{ing}/steps", json=args.steps).raise_for_status()

        W, S = args.workflows, args.steps
        for ph in args.phases.split(","):
            T = time.perf_counter()
            try:
                if ph == "seq":
                    res = phase_seq(cli, f"{ing}/steps", W, S)
                elif ph == "threads8":
                    res = phase_threads(f"{ing}/steps", W, S, args.concurrency, args.timeout)
                elif ph == "nsteps":
                    rows = []
                    for n in args.sizes:
                        t0 = time.perf_counter()
                        r = cli.post(f"{ing}/steps_timed", json=n)
                        dt = time.perf_counter() - t0
                        r.raise_for_status()
                        d = r.json()
                        rows.append(
                            {
                                "n": n,
                                "seconds": dt,
                                "ms_per_step": dt / n * 1e3,
                                "steps_per_s": n / dt,
                                "median_ms_first100": statistics.median(d["first"]) * 1e3,
                                "median_ms_last100": statistics.median(d["last"]) * 1e3,
                                "median_ms_all": d["all_median"] * 1e3,
                                "replayed_steps": d["replayed_steps"],
                            }
                        )
                    res = {"rows": rows}
                elif ph == "sleep":
                    late, late_step, replays = [], [], 0
                    for _ in range(args.sleep_reps):
                        r = cli.post(f"{ing}/sleepy", json=1.0)
                        r.raise_for_status()
                        d = r.json()
                        late_step.append((d["after"] - d["before_step"] - 1.0) * 1e3)
                        if d["after"] - d["t0"] >= 1.0:
                            late.append((d["after"] - d["t0"] - 1.0) * 1e3)
                        else:  # handler was replayed after the timer fired
                            replays += 1
                    res = {
                        "reps": args.sleep_reps,
                        "replays": replays,
                        "lateness_ms": late,
                        "lateness_from_before_step_ms": late_step,
                    }
                    src = late if late else late_step
                    res.update(
                        lateness_ms_median=statistics.median(src),
                        lateness_ms_min=min(src),
                        lateness_ms_max=max(src),
                        lateness_basis="t0 just before ctx.sleep"
                        if late
                        else "durable step before ctx.sleep",
                    )
                elif ph == "first":
                    lat, rtt = [], []
                    for _ in range(args.first_reps):
                        t_send = time.time()
                        t0 = time.perf_counter()
                        r = cli.post(f"{ing}/first", json=0)
                        rtt.append((time.perf_counter() - t0) * 1e3)
                        r.raise_for_status()
                        lat.append((r.json() - t_send) * 1e3)
                    res = {
                        "reps": len(lat),
                        "start_to_first_step_ms": lat,
                        "median_ms": statistics.median(lat),
                        "min_ms": min(lat),
                        "max_ms": max(lat),
                        "one_step_roundtrip_median_ms": statistics.median(rtt),
                    }
                else:
                    raise SystemExit(f"unknown phase {ph}")
            except Exception as e:
                res = {"error": repr(e)[-2000:]}
            res["phase_wall_s"] = time.perf_counter() - T
            out[ph] = res
            print(f"# {ph} done", file=sys.stderr, flush=True)
        cli.close()
        out["data_dir_bytes"] = sum(
            os.path.getsize(os.path.join(d, f))
            for d, _, fs in os.walk(os.path.join(base, "data"))
            for f in fs
            if os.path.isfile(os.path.join(d, f))
        )
    finally:
        if svc is not None:
            stop(svc, "service")
        if server is not None:
            stop(server, "restate-server")
        if args.keep_dir:
            print(f"# kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workflows", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--sleep-reps", type=int, default=5)
    ap.add_argument("--first-reps", type=int, default=20)
    ap.add_argument("--phases", default="seq,threads8,nsteps,sleep,first")
    ap.add_argument("--restate-server", default=DEFAULT_SERVER)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--keep-dir", action="store_true")
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    # turn SIGTERM (e.g. from `timeout`) into SystemExit so that the
    # `finally` blocks stop the server and the service
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.sizes = [int(x) for x in str(args.sizes).split(",") if x]

    if args.serve:
        serve(args.serve)
        return

    import platform
    from importlib.metadata import version

    sv = subprocess.run(
        [args.restate_server, "--version"], capture_output=True, text=True
    ).stdout.strip()
    meta = {
        "python": platform.python_version(),
        "nproc": os.cpu_count(),
        "restate_server": sv,
        "restate_sdk": version("restate-sdk"),
        "hypercorn": version("hypercorn"),
        "httpx": version("httpx"),
        "tmp": args.tmp,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    T0 = time.perf_counter()
    results = {"meta": meta}
    results.update(run_bench(args))
    results["total_s"] = time.perf_counter() - T0
    print("JSON " + json.dumps(results))

    # ---- table ----
    def g(d, k, fmt="{:.1f}"):
        v = d.get(k)
        return fmt.format(v) if isinstance(v, (int, float)) else str(v)

    print()
    print(
        f"{meta['restate_server']} + restate-sdk {meta['restate_sdk']} "
        f"(hypercorn {meta['hypercorn']}), Python {meta['python']}, "
        f"{meta['nproc']} cpus"
    )
    print(f"{'phase':<22}{'wf/s':>10}{'steps/s':>10}{'seconds':>10}")
    for ph in ("seq", "threads8"):
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
            f"n={r['reps']}, replays={r['replays']}, basis: {r['lateness_basis']})"
        )
    elif r:
        print("sleep ERROR", r.get("error", "")[-200:])
    r = results.get("first")
    if r and "median_ms" in r:
        print(
            f"start-to-first-step ms: median {r['median_ms']:.1f} "
            f"(min {r['min_ms']:.1f}, max {r['max_ms']:.1f}, n={r['reps']}); "
            f"one-step invocation round trip median "
            f"{r['one_step_roundtrip_median_ms']:.1f} ms"
        )
    print(
        f"server start {results.get('server_start_s', float('nan')):.1f}s; "
        f"total {results['total_s']:.1f}s"
    )


if __name__ == "__main__":
    main()
