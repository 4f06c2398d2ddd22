#!/usr/bin/env python3
"""wfl benchmark suite (issue 5): the same workloads on wfl and on a peer engine, side by side.

    python bench/run.py                 # full run, wfl vs DBOS Transact (SQLite): ~7 min
    python bench/run.py --quick         # small sizes, a smoke test: < 60 s
    python bench/run.py --only 1,2 --reps 5 --peer dbos,restate

Workloads (numbers as in issue 5; --only takes numbers or names):
  1 throughput  200 workflows x 10 trivial steps, 8 at a time -> steps/s
  2 long        one workflow of N sequential steps, N = 100, 2000, 6000 -> ms/step, and the
                marginal cost per step from N = 2,000 to 6,000 (start-up and warm-up cancel out)
  3 timer       a step with run_after=0.1/1/10 s, and step.sleep then a step -> lateness of
                the step body after its recorded due time (median, p99 ms), measured from
                outside: one idle `wfl worker` process (bench/timers.py)
  4 pickup      a start from another process while a worker idles -> ms to the first step
  5 cli         wall time of `wfl start` / `wfl status` processes, next to `python -c pass`
  6 sleepers    N runs sleeping 30 days -> worker RSS and idle CPU, `wfl status` / `--json`
  7 ceiling     workload-1 steps/s as a fraction of this disk's fsync limits

wfl's side runs in subprocesses of bench/wfl_side.py with this interpreter; a peer runs in
subprocesses of bench/dbos_peer.py / bench/restate_peer.py (copies of ../shared/bench/) with
--peer-python. Workloads 1 and 2 are repeated --reps times, wfl and peer alternating, and the
medians are reported; the others take many samples in one go. Everything is durable: wfl
fsyncs every record before acting on it, DBOS uses SQLite's default synchronous=FULL.

Output: progress on stderr; a table (workload, wfl, peer, ratio, target) and, last, one line
`JSON {...}` with every figure on stdout. ratio = how many times better wfl is than the peer
(> 1: wfl ahead), whichever direction "better" is for that measure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WFL_SIDE = HERE / "wfl_side.py"
TIMERS = HERE / "timers.py"
WORKLOADS = ["throughput", "long", "timer", "pickup", "cli", "sleepers", "ceiling"]
REPEATED = ("throughput", "long")  # run --reps times; the others take many samples at once
RESTATE_SERVER = (
    "/tmp/restate-npm/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"
)
RESTATE_HOWTO = """\
Restate is not installed; to add it (see bench/README.md):
    mkdir -p /tmp/restate-npm && cd /tmp/restate-npm && npm init -y \\
        && npm install @restatedev/restate-server
    python3 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install restate-sdk hypercorn httpx
    python bench/run.py --peer restate --peer-python /tmp/peers-venv/bin/python"""

# sizes per mode
FULL = {
    "workflows": 200,
    "steps": 10,
    "sizes": [100, 2000, 6000],
    "reps": 3,
    "timer_reps": 40,
    "timer_stagger": 0.05,
    "timer_sittings": 3,
    "timer_out_reps": 10,
    "timer_cases": [
        ["run_after", 0.1],
        ["run_after", 1.0],
        ["run_after", 10.0],
        ["sleep", 1.0],
        ["sleep", 10.0],
    ],
    "peer_sleep_reps": 10,
    "peer_sleep_delays": "0.1,1,10",
    "pickup_reps": 20,
    "pickup_cli_reps": 10,
    "pickup_gap": 0.25,
    "cli_reps": 15,
    "sleepers": 10000,
    "status_reps": 9,
    "idle_seconds": 30.0,
    "disk_seconds": 2.0,
    "peer_first_reps": 20,
}
QUICK = {
    "workflows": 40,
    "steps": 10,
    "sizes": [100, 200, 500],
    "reps": 1,
    "timer_reps": 6,
    "timer_stagger": 0.05,
    "timer_sittings": 1,
    "timer_out_reps": 3,
    "timer_cases": [["run_after", 0.1], ["run_after", 1.0], ["sleep", 1.0]],
    "peer_sleep_reps": 2,
    "peer_sleep_delays": "0.1,1",
    "pickup_reps": 5,
    "pickup_cli_reps": 2,
    "pickup_gap": 0.15,
    "cli_reps": 3,
    "sleepers": 300,
    "status_reps": 1,
    "idle_seconds": 3.0,
    "disk_seconds": 0.3,
    "peer_first_reps": 5,
}


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    values = [v for v in values if isinstance(v, int | float)]
    return statistics.median(values) if values else None


# -- running the two sides --------------------------------------------------------------------


def run_wfl(
    phase: str, opts: dict[str, Any], timeout: float, *, baseline: str | None = None
) -> dict[str, Any]:
    """One wfl_side.py phase (or phase "timers": bench/timers.py) in a fresh process;
    {"error": ...} when it fails. baseline: a checkout whose wfl/ is imported instead."""
    opts = dict(opts, timeout=timeout)
    t0 = time.perf_counter()
    cmd = [sys.executable, str(TIMERS), json.dumps(opts)]
    if phase != "timers":
        cmd = [sys.executable, str(WFL_SIDE), phase, json.dumps(opts)]
    env = None
    if baseline is not None:  # first on the path: ahead of this checkout's editable install
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([baseline, *_pythonpath()]))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"wfl {phase}: no result within {timeout + 30:.0f} s"}
    for line in p.stderr.splitlines():
        if line.startswith("#"):
            print(line, file=sys.stderr, flush=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = [ln for ln in p.stderr.strip().splitlines() if not ln.startswith("#")][-3:]
        return {"error": f"wfl {phase} exit {p.returncode}: " + " | ".join(tail)[-500:]}
    res: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    res["wall_s"] = time.perf_counter() - t0
    return res


def _pythonpath() -> list[str]:
    return [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x]


class Baseline:
    """An older commit of wfl checked out in a temporary git worktree (--baseline REV), so
    that one invocation measures before and after on the same machine at the same time."""

    def __init__(self, rev: str, tmp: str) -> None:
        repo = str(HERE.parent)
        self.commit = _git(repo, "rev-parse", "--short", rev)
        self.path = os.path.join(tmp, f"wflbench-baseline-{self.commit}-{os.getpid()}")
        _git(repo, "worktree", "add", "--detach", self.path, self.commit)
        self.repo = repo

    def close(self) -> None:
        _git(self.repo, "worktree", "remove", "--force", self.path)


def _git(repo: str, *args: str) -> str:
    p = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise SystemExit(f"--baseline: git {' '.join(args)} failed: {p.stderr.strip()}")
    return p.stdout.strip()


class Peer:
    """A peer engine run through its harness script; `phases` maps our workloads to its."""

    name = ""
    label = ""
    script = ""
    phases: dict[str, list[str]] = {}
    batch = False  # run all phases of a repetition in one invocation

    def __init__(self, python: str | None, cfg: dict[str, Any], tmp: str) -> None:
        self.python = python or sys.executable
        self.cfg = cfg
        self.tmp = tmp
        self.why_not = self.check()
        self.meta: dict[str, Any] = {}
        self.cache: dict[int, dict[str, Any]] = {}

    @property
    def ok(self) -> bool:
        return self.why_not is None

    def check(self) -> str | None:
        return None

    def importable(self, modules: str) -> bool:
        try:
            p = subprocess.run([self.python, "-c", f"import {modules}"], capture_output=True)
        except OSError:
            return False
        return p.returncode == 0

    def args(self) -> list[str]:
        c = self.cfg
        return [
            "--workflows",
            str(c["workflows"]),
            "--steps",
            str(c["steps"]),
            "--sizes",
            ",".join(map(str, c["sizes"])),
            "--sleep-reps",
            str(c["peer_sleep_reps"]),
            "--tmp",
            self.tmp,
        ]

    def run(self, workload: str, rep: int, selected: list[str]) -> dict[str, Any]:
        """The peer's phases for `workload`: {phase: result}."""
        phases = self.phases.get(workload)
        if not phases or not self.ok:
            return {}
        if not self.batch:
            return self.run_phases(phases)
        # a peer with a costly start-up (a server) runs every phase of this repetition in one
        # invocation, the first time one of them is asked for; later ones come from the cache
        if rep not in self.cache:
            wanted = [
                ph for w in selected if rep == 1 or w in REPEATED for ph in self.phases.get(w, [])
            ]
            self.cache[rep] = self.run_phases(wanted)
        return {ph: self.cache[rep].get(ph, {"error": "missing"}) for ph in phases}

    def run_phases(self, phases: list[str]) -> dict[str, Any]:
        """The given phases in one harness process: {phase: result}."""
        cmd = [self.python, str(HERE / self.script), "--phases", ",".join(phases), *self.args()]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        except subprocess.TimeoutExpired:
            return {ph: {"error": f"{self.name}: timed out"} for ph in phases}
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("JSON ")]
        if p.returncode != 0 or not lines:
            err = f"{self.name} exit {p.returncode}: {p.stderr.strip()[-400:]}"
            return {ph: {"error": err} for ph in phases}
        res: dict[str, Any] = json.loads(lines[-1][len("JSON ") :])
        self.meta = res.get("meta", self.meta)
        return {ph: res.get(ph, {"error": "missing"}) for ph in phases}


class Dbos(Peer):
    name = "dbos"
    label = "DBOS"
    script = "dbos_peer.py"
    phases = {
        "throughput": ["queue8", "threads8"],
        "long": ["nsteps"],
        "timer": ["sleep"],
        "cli": ["import"],
    }

    def check(self) -> str | None:
        if self.importable("dbos"):
            return None
        return (
            f"DBOS skipped: `import dbos` fails with {self.python}. Install the bench extra "
            "(pip install -e '.[bench]') or pass --peer-python /path/to/venv/bin/python"
        )

    def args(self) -> list[str]:
        return [
            *super().args(),
            "--import-reps",
            str(self.cfg["cli_reps"]),
            "--sleep-delays",
            str(self.cfg["peer_sleep_delays"]),
        ]


class Restate(Peer):
    name = "restate"
    label = "Restate"
    script = "restate_peer.py"
    batch = True
    phases = {
        "throughput": ["threads8"],
        "long": ["nsteps"],
        "timer": ["sleep"],
        "pickup": ["first"],
    }

    def __init__(self, python: str | None, cfg: dict[str, Any], tmp: str, server: str) -> None:
        self.server = server
        if python is None and not self.importable_by(sys.executable):
            fallback = "/tmp/peers-venv/bin/python"
            python = fallback if os.path.exists(fallback) else None
        super().__init__(python, cfg, tmp)

    @staticmethod
    def importable_by(python: str) -> bool:
        p = subprocess.run([python, "-c", "import restate, hypercorn, httpx"], capture_output=True)
        return p.returncode == 0

    def check(self) -> str | None:
        missing = []
        if not os.access(self.server, os.X_OK):
            missing.append(f"no restate-server at {self.server}")
        if not self.importable("restate, hypercorn, httpx"):
            missing.append(f"`import restate, hypercorn, httpx` fails with {self.python}")
        if missing:
            return "Restate skipped: " + "; ".join(missing) + "\n" + RESTATE_HOWTO
        return None

    def args(self) -> list[str]:
        return [
            *super().args(),
            "--first-reps",
            str(self.cfg["peer_first_reps"]),
            "--restate-server",
            self.server,
        ]


# -- the workloads ----------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, cfg: dict[str, Any], peers: list[Peer]) -> None:
        self.args = args
        self.cfg = cfg
        self.peers = peers
        self.wfl: dict[str, Any] = {}
        self.peer: dict[str, dict[str, Any]] = {p.name: {} for p in peers}
        self.opts = {"tmp": args.tmp}
        self.selected: list[str] = []
        self.baseline: Baseline | None = None

    def workload(self, name: str, fn: Callable[[], None]) -> None:
        log(f"--- workload {WORKLOADS.index(name) + 1}: {name}")
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # a broken workload must not stop the others
            self.wfl.setdefault(name, {})["error"] = f"{type(exc).__name__}: {exc}"
        log(f"    {name} took {time.perf_counter() - t0:.1f} s")

    def peers_run(self, workload: str, rep: int) -> None:
        for p in self.peers:
            if p.ok and workload in p.phases:
                res = p.run(workload, rep, self.selected)
                for ph, r in res.items():
                    self.peer[p.name].setdefault(ph, []).append(r)
                for ph, r in res.items():
                    log(f"    {p.label} {ph} rep {rep}: {_brief(r)}")

    # 1
    def throughput(self) -> None:
        c = self.cfg
        base = dict(self.opts, workflows=c["workflows"], steps=c["steps"])
        variants = {
            "main": base,
            "precreated": dict(base, precreated=True),
            "async_steps": dict(base, workflow="steps_async"),
        }
        # the real command, `wfl worker --processes N`, runs started while it is up
        variants["cli_1_process"] = dict(base, procs=1, phase="throughput_procs")
        variants["two_workers"] = dict(base, procs=2, phase="throughput_procs")
        reps: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
        for rep in range(1, self.cfg["reps"] + 1):
            for key, opts in variants.items():
                r = run_wfl(opts.get("phase", "throughput"), opts, 300)
                reps[key].append(r)
                log(f"    wfl {key} rep {rep}: {_brief(r)}")
            self.peers_run("throughput", rep)
        self.wfl["throughput"] = {
            key: _med_fields(
                rs,
                [
                    "steps_per_s",
                    "wf_per_s",
                    "seconds",
                    "fsyncs_per_step",
                    "load_delay_ms_max",
                    "runs_loaded_over_1s_late",
                ],
            )
            for key, rs in reps.items()
        }

    # 2
    def long(self) -> None:
        rows: list[dict[str, Any]] = []
        for rep in range(1, self.cfg["reps"] + 1):
            r = run_wfl("nsteps", dict(self.opts, sizes=self.cfg["sizes"]), 900)
            rows.append(r)
            log(f"    wfl rep {rep}: {_brief(r)}")
            self.peers_run("long", rep)
        self.wfl["long"] = _med_rows(rows)

    # 3
    def timer(self) -> None:
        c = self.cfg
        opts = dict(self.opts, reps=c["timer_out_reps"], sittings=1, cases=c["timer_cases"])
        sides: dict[str, list[dict[str, Any]]] = {"outside": [], "baseline": []}
        for k in range(1, c["timer_sittings"] + 1):  # alternating: load drifts hit both
            sides["outside"].append(run_wfl("timers", opts, 600))
            log(f"    wfl sitting {k}: {_brief_cases(sides['outside'][-1])}")
            if self.baseline is not None:
                sides["baseline"].append(run_wfl("timers", opts, 600, baseline=self.baseline.path))
                log(f"    baseline sitting {k}: {_brief_cases(sides['baseline'][-1])}")
        self.wfl["timers"] = _merge_sittings(sides["outside"])
        if self.baseline is not None:
            self.wfl["timers_baseline"] = _merge_sittings(sides["baseline"])
            self.wfl["timers_baseline"]["commit"] = self.baseline.commit
        r = run_wfl(
            "timer",
            dict(self.opts, reps=c["timer_reps"], stagger=c["timer_stagger"], delay=1.0),
            120,
        )
        self.wfl["timer"] = r
        log(f"    wfl in-process: {_brief(r.get('lateness', r))}")
        self.peers_run("timer", 1)

    # 4
    def pickup(self) -> None:
        c = self.cfg
        opts = dict(
            self.opts, reps=c["pickup_reps"], cli_reps=c["pickup_cli_reps"], gap=c["pickup_gap"]
        )
        r = run_wfl("pickup", opts, 300)
        self.wfl["pickup"] = r
        log(f"    wfl: client {_brief(r.get('client', r))}; cli {_brief(r.get('cli', {}))}")
        self.peers_run("pickup", 1)

    # 5
    def cli(self) -> None:
        r = run_wfl("cli", dict(self.opts, reps=self.cfg["cli_reps"]), 300)
        self.wfl["cli"] = r
        log(f"    wfl: {_brief(r)}")
        self.peers_run("cli", 1)

    # 6
    def sleepers(self) -> None:
        n = self.args.sleepers if self.args.sleepers is not None else self.cfg["sleepers"]
        opts = dict(self.opts, sleepers=n, status_reps=self.cfg["status_reps"])
        opts["idle_seconds"] = self.cfg["idle_seconds"]
        if self.baseline is not None:  # the commands and the idle worker, before and after
            opts["baseline"] = self.baseline.path
        r = run_wfl("sleepers", opts, 1500)
        self.wfl["sleepers"] = r

    # 7
    def ceiling(self) -> None:
        r = run_wfl("disk", dict(self.opts, seconds=self.cfg["disk_seconds"]), 120)
        self.wfl["disk"] = r
        if "throughput" not in self.wfl:  # workload 1 not selected: measure it once
            base = dict(self.opts, workflows=self.cfg["workflows"], steps=self.cfg["steps"])
            t = run_wfl("throughput", base, 300)
            self.wfl["throughput"] = {"main": _med_fields([t], ["steps_per_s", "fsyncs_per_step"])}
        log(f"    disk: {_brief(r)}")


def _brief_cases(r: dict[str, Any]) -> str:
    if "error" in r:
        return "ERROR " + str(r["error"])[:300]
    return ", ".join(f"{k} {v.get('median', 0):.2f}" for k, v in r.get("cases", {}).items())


def _merge_sittings(results: list[dict[str, Any]]) -> dict[str, Any]:
    """bench/timers.py results of several sittings as one: every sample pooled."""
    good = [r for r in results if "error" not in r]
    if not good:
        return results[0] if results else {"error": "no sitting"}
    raw: dict[str, list[float]] = {}
    for r in good:
        for key, vals in r["raw_ms"].items():
            raw.setdefault(key, []).extend(vals)
    return {
        "sittings": len(good),
        "errors": [r["error"] for r in results if "error" in r],
        "cases": {key: _summary(vals) for key, vals in raw.items()},
        "sitting_medians": {
            key: [median(r["raw_ms"][key]) for r in good if r["raw_ms"].get(key)] for key in raw
        },
        "worker_rss_mb": [x for r in good for x in r.get("worker_rss_mb", [])],
        "wfl_path": good[0].get("wfl_path"),
        "raw_ms": raw,
    }


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p99": _pctl(values, 99),
        "max": max(values),
    }


def _brief(r: Any) -> str:
    """A short one-line view of a result for progress output."""
    if not isinstance(r, dict):
        return str(r)[:120]
    if "error" in r:
        return "ERROR " + str(r["error"])[:300]
    parts = []
    for row in r.get("rows", []):
        parts.append(f"N={row.get('n')}: {row.get('ms_per_step', 0):.3f} ms/step")
    for k, v in r.items():
        if isinstance(v, dict) and "median_ms" in v:
            parts.append(f"{k}={v['median_ms']:.4g} ms")
        elif isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        elif isinstance(v, int | str) and len(parts) < 8:
            parts.append(f"{k}={v}")
        elif isinstance(v, dict) and "error" in v:
            parts.append(f"{k}=ERROR {str(v['error'])[:200]}")
    return " ".join(parts[:10])


def _med_fields(results: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    good = [r for r in results if "error" not in r]
    out: dict[str, Any] = {"reps": len(good)}
    if not good:
        out["error"] = results[-1].get("error", "no result") if results else "no result"
        return out
    for k in keys:
        out[k] = median([r.get(k) for r in good])  # type: ignore[misc]
    out["all"] = [r.get(keys[0]) for r in good]
    return out


def _marginal(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    """ms per step between two run lengths: what one more step costs once a run is going."""
    if not a or not b or a.get("ms_per_step") is None or b.get("ms_per_step") is None:
        return None
    total_a = a["ms_per_step"] * a["n"]
    total_b = b["ms_per_step"] * b["n"]
    return float((total_b - total_a) / (b["n"] - a["n"]))


def _med_rows(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, per N, of the `rows` of several nsteps results."""
    good = [r for r in results if "rows" in r]
    if not good:
        return {"error": results[-1].get("error", "no result") if results else "no result"}
    by_n: dict[int, list[dict[str, Any]]] = {}
    for r in good:
        for row in r["rows"]:
            by_n.setdefault(row["n"], []).append(row)
    keys = ["ms_per_step", "median_ms_first100", "median_ms_last100", "fsyncs_per_step"]
    rows = []
    for n, rs in sorted(by_n.items()):
        row: dict[str, Any] = {"n": n, "reps": len(rs)}
        for k in keys:
            row[k] = median([x.get(k) for x in rs])  # type: ignore[misc]
        rows.append(row)
    return {"rows": rows}


# -- the table --------------------------------------------------------------------------------


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


class Table:
    def __init__(self, peers: list[Peer]) -> None:
        self.peers = [p for p in peers if p.ok]
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text[:400])

    def add(
        self,
        w: str,
        label: str,
        wfl: Any,
        peers: dict[str, Any] | None = None,
        *,
        better: str | None = "higher",
        target: str = "",
        ok: bool | None = None,
    ) -> None:
        ratios: dict[str, float | None] = {}
        for name, pv in (peers or {}).items():
            ratio = None
            if isinstance(wfl, int | float) and isinstance(pv, int | float) and better:
                if better == "higher" and pv > 0:
                    ratio = wfl / pv
                elif better == "lower" and wfl > 0:
                    ratio = pv / wfl
            ratios[name] = ratio
        self.rows.append(
            {
                "workload": w,
                "measure": label,
                "wfl": wfl,
                "peers": peers or {},
                "ratio": ratios,
                "better": better,
                "target": target,
                "ok": ok,
            }
        )

    def render(self) -> str:
        head = ["#", "measure", "wfl"]
        for p in self.peers:
            head += [p.label, "ratio"]
        head += ["target", ""]
        lines = [head]
        for r in self.rows:
            wv = r["wfl"]
            cells = [r["workload"], r["measure"], _cell(wv)]
            for p in self.peers:
                pv = r["peers"].get(p.name)
                ratio = r["ratio"].get(p.name)
                cells += [_cell(pv), f"{ratio:.2f}x" if ratio is not None else ""]
            mark = {True: "ok", False: "MISS", None: ""}[r["ok"]]
            cells += [r["target"], mark]
            lines.append(cells)
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
        out = []
        for k, line in enumerate(lines):
            cells = []
            for i, cell in enumerate(line):
                text = str(cell)
                cells.append(text.ljust(widths[i]) if i < 2 else text.rjust(widths[i]))
            out.append("  ".join(cells).rstrip())
            if k == 0:
                out.append("  ".join("-" * w for w in widths))
        return "\n".join(out)


def _cell(v: Any) -> str:
    if isinstance(v, dict) and "error" in v:
        return "error"
    return fmt(v)


def _get(d: Any, *path: Any) -> Any:
    """d[path...] or None; an error dict along the way gives the string 'error: ...'."""
    for key in path:
        if not isinstance(d, dict):
            return None
        if "error" in d and key not in d:
            return "error"
        d = d.get(key)
    return d


def _peer_med(results: list[dict[str, Any]] | None, key: str) -> Any:
    if not results:
        return None
    good = [r for r in results if "error" not in r]
    if not good:
        return "error"
    return median([r.get(key) for r in good])


def _peer_rows(results: list[dict[str, Any]] | None) -> dict[int, dict[str, Any]]:
    if not results:
        return {}
    return {row["n"]: row for row in _med_rows(results).get("rows", [])}


def build_table(bench: Bench) -> Table:
    t = Table(bench.peers)
    w, pr = bench.wfl, bench.peer
    peers_ok = [p for p in bench.peers if p.ok]

    def peer_vals(fn: Callable[[str, dict[str, Any]], Any]) -> dict[str, Any]:
        return {p.name: fn(p.name, pr.get(p.name, {})) for p in peers_ok}

    def section_1() -> None:
        if "throughput" in w:
            tp = w["throughput"]
            # issue 9's definition: one `wfl worker` as shipped (a process per CPU), runs
            # started from another process while it serves
            main = _get(tp, "two_workers", "steps_per_s")
            peer1 = peer_vals(
                lambda n, d: _peer_med(d.get("queue8") or d.get("threads8"), "steps_per_s")
            )
            ok = None
            if isinstance(main, float):
                checks = []
                for name, need in (("dbos", 10.0), ("restate", 3.0)):
                    pv = peer1.get(name)
                    if isinstance(pv, float):
                        checks.append(main >= need * pv)
                ok = all(checks) if checks else None
            t.add(
                "1",
                f"throughput, {bench.cfg['workflows']}x{bench.cfg['steps']} steps, 8 at a time:"
                " `wfl worker --processes 2` (as shipped on 2 CPUs) (steps/s)",
                main,
                peer1,
                target=">=10x DBOS, >=3x Restate",
                ok=ok,
            )
            if "dbos" in pr:
                t.add(
                    "1",
                    "  DBOS: 8 client threads instead of queue8 (steps/s)",
                    None,
                    {"dbos": _peer_med(pr["dbos"].get("threads8"), "steps_per_s")},
                    better=None,
                )
            t.add(
                "1",
                "  wfl: in-process Worker, runs started from a thread (steps/s)",
                _get(tp, "main", "steps_per_s"),
                peer1,
                better=None,
            )
            t.add(
                "1",
                "  wfl: runs created before the worker (steps/s)",
                _get(tp, "precreated", "steps_per_s"),
                better=None,
            )
            t.add(
                "1",
                "  wfl: async def steps (steps/s)",
                _get(tp, "async_steps", "steps_per_s"),
                better=None,
            )
            t.add(
                "1",
                "  wfl worker --processes 1, the command (steps/s)",
                _get(tp, "cli_1_process", "steps_per_s"),
                peer1,
                better=None,
            )
            t.add("1", "  wfl: fsyncs per step", _get(tp, "main", "fsyncs_per_step"), better=None)
            late = _get(tp, "main", "runs_loaded_over_1s_late")
            t.add(
                "1",
                "  wfl: slowest start-to-load of a run (ms; >1 s = lost wake-up)",
                _get(tp, "main", "load_delay_ms_max"),
                better=None,
                target="<1000",
                ok=not late if isinstance(late, int | float) else None,
            )

    def section_2() -> None:
        if "long" in w:
            if "error" in w["long"]:
                t.add("2", "one long run (see notes)", "error", better=None)
                return
            rows = {r["n"]: r for r in w["long"]["rows"]}
            prow = {p.name: _peer_rows(pr.get(p.name, {}).get("nsteps")) for p in peers_ok}
            sizes = sorted(rows)
            for n in sizes:
                v = rows[n]["ms_per_step"]
                t.add(
                    "2",
                    f"one run of N={n:,} steps (ms/step)",
                    v,
                    {k: (r.get(n) or {}).get("ms_per_step") for k, r in prow.items()},
                    better="lower",
                    target="<=0.2",
                    ok=v <= 0.2,
                )
            if len(sizes) >= 3:
                a, b = sizes[-2], sizes[-1]
                m = _marginal(rows[a], rows[b])
                pm = {k: _marginal(r.get(a), r.get(b)) for k, r in prow.items()}
                t.add(
                    "2",
                    f"one run: marginal ms/step from N={a:,} to N={b:,}",
                    m,
                    pm,
                    better="lower",
                    target="<=0.2",
                    ok=m is not None and m <= 0.2,
                )
            if len(sizes) >= 2:
                lo, hi = sizes[0], sizes[-1]
                g = rows[hi]["ms_per_step"] / rows[lo]["ms_per_step"]
                pg = {}
                for k, r in prow.items():
                    a, b = r.get(lo), r.get(hi)
                    pg[k] = b["ms_per_step"] / a["ms_per_step"] if a and b else None
                t.add(
                    "2",
                    f"  growth: ms/step at N={hi:,} / at N={lo:,}",
                    g,
                    pg,
                    better=None,
                    target="<=1.2",
                    ok=g <= 1.2,
                )
                last = rows[hi]
                t.add(
                    "2",
                    f"  N={hi:,}: median ms of first 100 steps",
                    last["median_ms_first100"],
                    {k: (r.get(hi) or {}).get("median_ms_first100") for k, r in prow.items()},
                    better="lower",
                )
                t.add(
                    "2",
                    f"  N={hi:,}: median ms of last 100 steps",
                    last["median_ms_last100"],
                    {k: (r.get(hi) or {}).get("median_ms_last100") for k, r in prow.items()},
                    better="lower",
                )
                t.add(
                    "2", f"  wfl: fsyncs per step at N={hi:,}", last["fsyncs_per_step"], better=None
                )

    def section_3() -> None:
        def peer_lat(d: dict[str, Any], delay: str, q: float) -> Any:
            rs = [r for r in d.get("sleep") or [] if "error" not in r]
            vals = [x for r in rs for x in (r.get("by_delay") or {}).get(delay, [])]
            if not vals and delay == "1":  # a peer that knows only sleep(1)
                vals = [x for r in rs for x in r.get("lateness_ms", [])]
            if not vals:
                return "error" if d.get("sleep") else None
            return statistics.median(vals) if q == 50 else _pctl(vals, q)

        out, base = w.get("timers"), w.get("timers_baseline")
        if out is not None and "error" in out:
            t.add("3", "timers from outside (see notes)", _err(t, "3", w, "timers"), better=None)
        elif out is not None:
            for key, c in out["cases"].items():
                if " " not in key:  # pickup (4), floor: below
                    continue
                kind, delay = key.split()
                what = f"run_after={delay}" if kind == "run_after" else f"sleep({delay}) + step"
                med, p99 = c["median"], c["p99"]
                t.add(
                    "3",
                    f"{what}: median lateness (ms, outside worker, n={c['n']})",
                    med,
                    peer_vals(lambda k, d, x=delay: peer_lat(d, x, 50)),
                    better="lower",
                    target="<=1",
                    ok=med <= 1,
                )
                t.add(
                    "3",
                    f"  {what}: p99 lateness (ms)",
                    p99,
                    peer_vals(lambda k, d, x=delay: peer_lat(d, x, 99)),
                    better="lower",
                    target="<=5",
                    ok=p99 <= 5,
                )
                b = _get(base, "cases", key)
                if isinstance(b, dict):
                    t.add(
                        "3",
                        f"  {what}: baseline {base['commit']}, median / p99 (ms)",
                        f"{fmt(b['median'])} / {fmt(b['p99'])}",
                        better=None,
                    )
        floor = _get(out, "cases", "floor")
        if isinstance(floor, dict):
            t.add(
                "3",
                "  the machine: the bench's own sleeps at the same minutes, median / p99 (ms)",
                f"{fmt(floor['median'])} / {fmt(floor['p99'])}",
                better=None,
            )
        if "timer" in w:
            lat = _get(w, "timer", "lateness")
            t.add(
                "3",
                f"  in-process worker, run_after=1, after the workflow's clock (median ms,"
                f" n={_get(lat, 'n')})",
                _get(lat, "median"),
                better=None,
            )

    def section_4() -> None:
        pick = _get(w, "timers", "cases", "pickup")
        if isinstance(pick, dict):
            t.add(
                "4",
                f"pick-up, outside `wfl worker`: Client.start -> first step (median ms,"
                f" n={pick['n']})",
                pick["median"],
                better=None,
                target="<=1.5",
                ok=pick["median"] <= 1.5,
            )
            own = _get(w, "timers", "cases", "pickup_start")
            if isinstance(own, dict):
                t.add(
                    "4",
                    "  of which the Client.start call itself (journal created, fsynced; median ms)",
                    own["median"],
                    better=None,
                )
            b = _get(w, "timers_baseline", "cases", "pickup")
            if isinstance(b, dict):
                t.add(
                    "4",
                    f"  the same, baseline {w['timers_baseline']['commit']} (median ms)",
                    b["median"],
                    better=None,
                )
        if "pickup" in w:
            pu = w["pickup"]
            n = _get(pu, "client", "n")
            med = _get(pu, "client", "median")
            t.add(
                "4",
                f"pick-up: Client.start in another process (median ms, n={n})",
                med,
                peer_vals(lambda k, d: _peer_med(d.get("first"), "median_ms")),
                better="lower",
                target="<=20",
                ok=med <= 20 if isinstance(med, float) else None,
            )
            cli_med = _get(pu, "cli", "median")
            if _get(pu, "cli", "n"):
                t.add(
                    "4",
                    "  pick-up: `wfl start` process, spawn to first step (median ms)",
                    cli_med,
                    better=None,
                )
            for err in _get(pu, "errors") or []:
                t.note(f"4: {err}")

    def section_5() -> None:
        if "cli" in w:
            c = w["cli"]
            dbos_import = (
                {
                    "dbos": _peer_med(
                        [
                            r["import_dbos"]
                            for r in pr["dbos"].get("import", [])
                            if "import_dbos" in r
                        ]
                        or None,
                        "median_ms",
                    )
                }
                if "dbos" in pr and pr["dbos"].get("import")
                else {}
            )
            ws = _get(c, "wfl_start", "median_ms")
            t.add(
                "5",
                "`wfl start` process (median ms; DBOS: python -c 'import dbos')",
                ws if ws is not None else _err(t, "5", c, "wfl_start"),
                dbos_import,
                better="lower",
                target="<=80",
                ok=ws <= 80 if isinstance(ws, float) else None,
            )
            st = _get(c, "wfl_status", "median_ms")
            t.add(
                "5",
                "`wfl status` process (median ms)",
                st if st is not None else _err(t, "5", c, "wfl_status"),
                better=None,
            )
            t.add(
                "5",
                "  python -c 'import wfl' (median ms)",
                _get(c, "python_import_wfl", "median_ms"),
                better=None,
            )
            t.add(
                "5",
                "  python -c pass (median ms)",
                _get(c, "python_pass", "median_ms"),
                better=None,
            )

    def section_6() -> None:
        if "sleepers" in w:
            s = w["sleepers"]
            n = _get(s, "sleepers")
            label = f"{n:,}" if isinstance(n, int) else "N"
            if "error" in s:
                t.add("6", f"{label} sleeping runs (see notes)", "error", better=None)
                return
            rss_scan = _get(s, "scan", "rss_mb")
            t.add(
                "6",
                f"{label} sleeping runs: fresh worker RSS after scan (MB)",
                rss_scan,
                better=None,
                target="<=150",
                ok=rss_scan <= 150 if isinstance(rss_scan, float) else None,
            )
            rss_drive = _get(s, "drive", "peak_rss_mb")
            t.add(
                "6",
                "  peak RSS of the worker that put them to sleep (MB)",
                rss_drive,
                better=None,
                target="<=150",
                ok=rss_drive <= 150 if isinstance(rss_drive, float) else None,
            )
            t.add(
                "6",
                "  fresh worker: scan of all journals (ms)",
                _ms(_get(s, "scan", "scan_seconds")),
                better=None,
            )
            t.add("6", "  create (Client.start) runs/s", _get(s, "starts_per_s"), better=None)
            drive_s = _get(s, "drive", "seconds")
            t.add(
                "6",
                "  drive to sleep (runs/s)",
                n / drive_s if isinstance(drive_s, float) and isinstance(n, int) else drive_s,
                better=None,
            )
            timers = _get(s, "scan", "timers")
            t.add(
                "6",
                "  runs asleep (a fresh worker holds their timer)",
                timers,
                better=None,
                target=f"={label}",
                ok=timers == n if isinstance(timers, int) else None,
            )
            errs = _get(s, "drive", "logged_errors")
            if isinstance(errs, int) and errs:
                first = (_get(s, "drive", "first_errors") or [""])[0]
                t.add(
                    "6",
                    "  errors logged by the worker while driving (see notes)",
                    errs,
                    better=None,
                )
                t.note(f"6: the worker logged {errs} errors while driving, e.g.: {first}")
            for key, what, target in (
                ("status_default", "`wfl status` (newest 50 + N more)", 200),
                ("status_json", f"`wfl status --json` over all {label}", 500),
            ):
                v = _get(s, key, "new", "median_ms")
                cpu = _get(s, key, "new", "cpu_median_ms")
                t.add(
                    "6",
                    f"{what}, median ms" + (f" (CPU {cpu:.0f})" if isinstance(cpu, float) else ""),
                    v if v is not None else _err(t, "6", s, key),
                    better=None,
                    target=f"<={target}",
                    ok=v <= target if isinstance(v, float) else None,
                )
                b = _get(s, key, "baseline", "median_ms")
                if b is not None:
                    cpu = _get(s, key, "baseline", "cpu_median_ms")
                    t.add("6", f"  the same, baseline (CPU {cpu:.0f})", b, better=None)
            for side in ("new", "baseline"):
                idle = _get(s, "idle", side)
                if not isinstance(idle, dict):
                    continue
                what = "`wfl worker` holding them" if side == "new" else "  the same, baseline"
                procs = idle.get("processes", 1)
                t.add(
                    "6",
                    f"{what}: CPU ms over {idle['idle_seconds']:.0f} s idle (RSS / peak / PSS "
                    f"MB {idle['rss_mb']:.0f} / {idle['peak_rss_mb']:.0f} / "
                    f"{idle.get('pss_mb', 0):.0f}, {procs} process"
                    + ("es)" if procs != 1 else ")"),
                    idle["idle_cpu_ms"],
                    better=None,
                    target="~0" if side == "new" else "",
                )
            t.add(
                "6",
                "  Client.list(limit=50) in-process (ms)",
                _get(s, "client_list50_ms"),
                better=None,
            )

    def section_7() -> None:
        if "disk" in w:
            d = w["disk"]
            sps = _get(w, "throughput", "main", "steps_per_s")
            h = _get(d, "h_8threads_own_file_fdatasync", "records_per_s")
            a = _get(d, "a_fsync_each", "records_per_s")
            g = _get(d, "d_group64_fsync", "records_per_s")
            fps = _get(w, "throughput", "main", "fsyncs_per_step")
            t.add("7", "disk: 8 writers x own file, append+fdatasync (records/s)", h, better=None)
            t.add("7", "disk: 1 writer, append+fsync (fsyncs/s)", a, better=None)
            t.add("7", "disk: 64 records per fsync, group commit (records/s)", g, better=None)
            if isinstance(sps, float):
                if isinstance(h, float):
                    t.add("7", "workload-1 steps/s / 8-writer fsync limit", sps / h, better=None)
                if isinstance(a, float):
                    t.add("7", "workload-1 steps/s / 1-writer fsync limit", sps / a, better=None)
                if isinstance(g, float):
                    t.add(
                        "7", "workload-1 steps/s / group-commit record limit", sps / g, better=None
                    )
                if isinstance(fps, float) and isinstance(h, float):
                    t.add(
                        "7",
                        "  wfl fsyncs/s in workload 1 / 8-writer fsync limit",
                        sps * fps / h,
                        better=None,
                    )

    for k, section in enumerate(
        [section_1, section_2, section_3, section_4, section_5, section_6, section_7], start=1
    ):
        try:
            section()
        except Exception as exc:  # a malformed result must not lose the others
            t.add(str(k), "(table rows failed, see notes)", "error", better=None)
            t.note(f"{k}: building the rows: {type(exc).__name__}: {exc}")
    for name in WORKLOADS:
        err = _get(w, name, "error")
        if isinstance(err, str) and err != "error":
            k = str(WORKLOADS.index(name) + 1)
            if name not in ("long", "sleepers"):  # those add their own error row
                t.add(k, f"{name} (see notes)", "error", better=None)
            t.note(f"{k}: {err}")
    return t


def _pctl(values: list[float], q: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def _ms(v: Any) -> Any:
    return v * 1e3 if isinstance(v, float) else v


def _err(t: Table, w: str, d: dict[str, Any], key: str) -> str:
    """The cell for a measure that has no figure; its error goes to the notes."""
    e = _get(d, key, "error")
    if e is not None:
        t.note(f"{w}: {key}: {e}")
    return "n/a"


# -- main -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "executable": sys.executable,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            info["mem_gb"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    repo = HERE.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "wfl"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        info["wfl_commit"] = rev + ("+uncommitted changes in wfl/" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def fs_type(path: str) -> str:
    try:
        out = subprocess.run(["df", "-T", path], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[-1].split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def parse_only(text: str | None) -> list[str]:
    if not text:
        return list(WORKLOADS)
    chosen = []
    for part in text.split(","):
        part = part.strip().lower()
        if part.isdigit() and 1 <= int(part) <= len(WORKLOADS):
            chosen.append(WORKLOADS[int(part) - 1])
        elif part in WORKLOADS:
            chosen.append(part)
        elif part:
            raise SystemExit(f"--only: unknown workload {part!r} (1-7 or {', '.join(WORKLOADS)})")
    return [w for w in WORKLOADS if w in chosen]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test (< 60 s)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions of workloads 1-2")
    ap.add_argument(
        "--peer", default="dbos", help="dbos, restate, none, or a comma list (dbos,restate)"
    )
    ap.add_argument(
        "--peer-python",
        default=None,
        help="interpreter that has the peer installed (default: this one)",
    )
    ap.add_argument("--restate-server", default=RESTATE_SERVER)
    ap.add_argument("--only", default=None, help="workloads, e.g. 1,2 or throughput,timer")
    ap.add_argument("--sleepers", type=int, default=None, help="runs in workload 6 (10000)")
    ap.add_argument("--tmp", default="/tmp", help="where journals and peer databases go")
    ap.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="also measure workloads 3 and 6 with this older commit (a temporary git worktree)",
    )
    args = ap.parse_args()

    cfg = dict(QUICK if args.quick else FULL)
    if args.reps is not None:
        cfg["reps"] = max(1, args.reps)
    only = parse_only(args.only)

    peers: list[Peer] = []
    for name in [p.strip() for p in args.peer.split(",") if p.strip()]:
        if name == "none":
            continue
        if name == "dbos":
            peers.append(Dbos(args.peer_python, cfg, args.tmp))
        elif name == "restate":
            peers.append(Restate(args.peer_python, cfg, args.tmp, args.restate_server))
        else:
            raise SystemExit(f"--peer: unknown peer {name!r} (dbos, restate, none)")
    for p in peers:
        if not p.ok:
            log(str(p.why_not))
            print(str(p.why_not), flush=True)

    meta = machine()
    meta["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    if meta["loadavg_start"][0] > 0.8:
        log(
            f"warning: load average {meta['loadavg_start']} before the start: other processes"
            " are busy, figures will be noisy (ratios within this run remain comparable)"
        )
    meta["tmp"] = args.tmp
    meta["tmp_fstype"] = fs_type(args.tmp)
    meta["mode"] = "quick" if args.quick else "full"
    log(
        f"wfl bench ({meta['mode']}) on {meta.get('cpu', '?')}, {meta['nproc']} cpus; "
        f"peers: {', '.join(p.label for p in peers if p.ok) or 'none'}"
    )
    T0 = time.perf_counter()
    bench = Bench(args, cfg, peers)
    bench.selected = only
    if args.baseline and ("timer" in only or "sleepers" in only):
        bench.baseline = Baseline(args.baseline, args.tmp)
        meta["baseline_commit"] = bench.baseline.commit
        log(f"baseline {bench.baseline.commit} checked out in {bench.baseline.path}")
    try:
        for name in only:
            bench.workload(name, getattr(bench, name))
    finally:
        if bench.baseline is not None:
            bench.baseline.close()
    meta["total_s"] = time.perf_counter() - T0
    meta["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    table = build_table(bench)
    for p in peers:
        if p.ok and p.meta:
            meta[p.name] = {
                k: v
                for k, v in p.meta.items()
                if k in ("dbos", "sqlite", "restate_server", "restate_sdk", "sqlalchemy")
            }
    print()
    print(
        f"wfl benchmark, {meta['date']}, {meta.get('cpu', '?')} ({meta['nproc']} cpus, "
        f"{meta.get('mem_gb', '?')} GB), kernel {meta['kernel']}, Python {meta['python']}, "
        f"journals on {args.tmp} ({meta['tmp_fstype']}), wfl {meta.get('wfl_commit', '?')}"
    )
    for p in peers:
        if p.ok:
            print(f"peer {p.label}: {json.dumps(meta.get(p.name, {}))}")
    print(
        f"mode {meta['mode']}, reps {cfg['reps']} (workloads 1-2: medians), "
        f"total {meta['total_s']:.0f} s; load average {meta['loadavg_start'][0]} at start, "
        f"{meta['loadavg_end'][0]} at end"
    )
    if meta.get("baseline_commit"):
        print(f"baseline (workloads 3 and 6): wfl {meta['baseline_commit']}, sittings alternating")
    print("ratio = how many times better wfl is than the peer (>1: wfl ahead)")
    print()
    print(table.render())
    if table.notes:
        print()
        print("notes:")
        for text in table.notes:
            print(f"  {text}")
    print()
    out = {
        "meta": meta,
        "config": cfg,
        "rows": table.rows,
        "notes": table.notes,
        "wfl": bench.wfl,
        "peers": bench.peer,
    }
    print("JSON " + json.dumps(out, default=str))


if __name__ == "__main__":
    main()
