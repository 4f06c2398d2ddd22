#!/usr/bin/env python3
"""Where a timed step's lateness and a pick-up's time go: an instrumented `wfl worker` for
bench/timers.py, and a report of what it noted (issue 16).

    WFL_PROBE_OUT=/tmp/probe python bench/timers.py \\
        '{"worker_cmd": ["bench/timer_probe.py"], "sittings": 1}'
    python bench/timer_probe.py --report /tmp/probe.*

As a worker it notes, with wall-clock times: every attempt (its due time, when it was fired,
when its body ran); for an attempt started ahead, when its step thread began to wait, woke,
and how long that thread sat on the kernel's run queue meanwhile (/proc/self/task/TID/schedstat:
waiting for a CPU, i.e. the machine's load); the stages of picking a run up (news, lease,
replay); garbage collections; and every loop callback that ran over 0.5 ms. It writes them as
JSON to $WFL_PROBE_OUT.PID when it exits. The report prints, per attempt later than --late ms,
what overlapped it, and the medians of the pick-up stages.
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

NOTES: dict[str, list[Any]] = {"attempts": [], "waits": [], "stages": [], "gc": [], "slow": []}


def _runq_ns() -> int:
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            return int(f.read().split()[1])
    except OSError:
        return 0


def _instrument() -> None:
    import asyncio.events

    import wfl.execute as execute
    import wfl.replay as replay
    import wfl.store as store
    import wfl.worker as worker

    def when_due(clock: Any, when: float, body: Any) -> Any:
        enter, q0 = time.time(), _runq_ns()
        clock.sleep_until(when)
        woke = time.time()
        result = body()
        NOTES["waits"].append([when, enter, woke, (_runq_ns() - q0) / 1e6])
        return result

    execute._when_due = when_due  # type: ignore[assignment]

    run_execute = replay.RunDriver._execute

    async def attempt(self: Any, p: Any) -> None:
        fired = time.time()
        try:
            await run_execute(self, p)
        finally:
            s = self.state.steps.get(p.n)
            body = s.result if s is not None and isinstance(s.result, float) else None
            NOTES["attempts"].append([self.run_id, p.n, p.due, fired, body])

    replay.RunDriver._execute = attempt  # type: ignore[method-assign]

    def stage(owner: Any, name: str) -> None:
        fn = getattr(owner, name, None)
        if fn is None:
            return

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                NOTES["stages"].append([name, t0, time.time()])

        setattr(owner, name, timed)

    for name in ("_on_news", "_load", "_open_driver"):
        stage(worker.Worker, name)
    stage(store.FileStore, "try_lease")

    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started["t"] = time.time()
        else:
            NOTES["gc"].append([started.get("t", 0.0), time.time(), info.get("generation")])

    gc.callbacks.append(on_gc)
    run_handle = asyncio.events.Handle._run

    def handle(self: Any) -> None:
        t0 = time.time()
        try:
            run_handle(self)
        finally:
            if time.time() - t0 > 0.0005:
                NOTES["slow"].append([repr(self._callback)[:60], t0, time.time()])

    asyncio.events.Handle._run = handle  # type: ignore[method-assign]

    def dump() -> None:
        with open(f"{os.environ.get('WFL_PROBE_OUT', '/tmp/wfl-probe')}.{os.getpid()}", "w") as f:
            json.dump(NOTES, f)

    atexit.register(dump)


def report(paths: list[str], late_ms: float) -> None:
    for path in paths:
        with open(path) as f:
            notes = json.load(f)
        waits = {round(w[0], 6): w for w in notes["waits"]}
        timed, pickups = [], []
        for run_id, _n, due, fired, body in notes["attempts"]:
            if body is None:
                continue
            (timed if due - fired > 0.001 else pickups).append((run_id, due, fired, body))
        print(f"{path}: {len(timed)} attempts started ahead, {len(pickups)} not")
        for run_id, due, fired, body in timed:
            late = (body - due) * 1e3
            if late < late_ms:
                continue
            w = waits.get(round(due, 6))
            why = (
                f"thread waited from {_ms(w[1], due)}, woke {_ms(w[2], due)}, on the run queue "
                f"{w[3]:.1f} ms"
                if w
                else f"no wait in a thread (fired {_ms(fired, due)}: the write-ahead ran late)"
            )
            near = [f"{n} {1e3 * (b - a):.1f} ms at {_ms(a, due)}" for n, a, b in notes["slow"]
                    if b >= due - 0.03 and a <= body]  # fmt: skip
            near += [f"gc gen{g} {1e3 * (b - a):.1f} ms" for a, b, g in notes["gc"]
                     if b >= due - 0.03 and a <= body]  # fmt: skip
            print(f"  {run_id} {late:7.2f} ms late: {why}; " + "; ".join(near))
        stages: dict[str, list[float]] = {}
        for name, t0, t1 in notes["stages"]:
            stages.setdefault(name, []).append((t1 - t0) * 1e3)
        for name, vals in stages.items():
            print(f"  stage {name}: median {statistics.median(vals):.3f} ms (n={len(vals)})")


def _ms(t: float, due: float) -> str:
    return f"{1e3 * (t - due):+.1f} ms"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report"]:
        args = sys.argv[2:]
        late = 2.0
        if args[:1] == ["--late"]:
            late, args = float(args[1]), args[2:]
        report(args, late)
    else:
        _instrument()
        from wfl.entry import main

        sys.argv[0] = "wfl"
        main()
