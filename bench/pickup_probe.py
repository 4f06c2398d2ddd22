#!/usr/bin/env python3
"""Where a pick-up's time goes inside the worker (issue 16): an instrumented `wfl worker` for
bench/timers.py, and a report of the stamps it took.

    WFL_PROBE_OUT=/tmp/pp python bench/timers.py \\
        '{"worker_cmd": ["bench/pickup_probe.py"], "sittings": 1, "reps": 20, "cases": []}'
    python bench/pickup_probe.py --report /tmp/pp.*

As a worker it stamps (time.perf_counter, one process) the epoll wake-up, every loop callback
(what it was, when it began and ended), and the stages of a pick-up: news, lease, journal read,
folds, the flow's lookup, the driver, the first step call, the attempt's write and sync, the
body. The report prints, per stage, the median offset from the wake-up on the news and the
median time the stage took, then the loop callbacks of the median pick-up.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import statistics
import sys
import time
from typing import Any

EV: list[tuple[str, float, float, float]] = []  # (what, start, end, thread CPU)
now = time.perf_counter
cpu = time.thread_time


def _wrap(owner: Any, name: str, label: str | None = None) -> None:
    fn = getattr(owner, name, None)
    if fn is None:
        return
    tag = label or name

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = now(), cpu()
        try:
            return fn(*args, **kwargs)
        finally:
            EV.append((tag, t0, now(), cpu() - c0))

    setattr(owner, name, timed)


def _instrument() -> None:
    import asyncio.events
    import selectors

    import wfl.codestate as codestate
    import wfl.hops as hops
    import wfl.journal as journal
    import wfl.state as state
    import wfl.store as store
    import wfl.worker as worker

    for name in ("_on_news", "_load", "_open_driver", "_consider"):
        _wrap(worker.Worker, name)
    _wrap(store.FileStore, "try_lease")
    _wrap(store.FileStore, "writer")
    _wrap(store.FileStore, "begin_many")
    _wrap(store.RunJournalWriter, "read_all")
    _wrap(journal.GroupWrite, "sync", "group.sync")
    _wrap(codestate, "load_for_run")
    _wrap(worker.RunDriver, "__init__", "RunDriver()")
    _wrap(worker.RunDriver, "start", "driver.start")
    _wrap(worker.RunDriver, "call_step")
    _wrap(worker.RunDriver, "_append")
    _wrap(worker.Worker, "emit")
    fold = state.RunState.from_records.__func__  # type: ignore[attr-defined]

    def from_records(cls: Any, recs: Any) -> Any:
        t0, c0 = now(), cpu()
        try:
            return fold(cls, recs)
        finally:
            EV.append(("fold", t0, now(), cpu() - c0))

    state.RunState.from_records = classmethod(from_records)  # type: ignore[method-assign,assignment]

    for name in ("run_timed", "run_inline"):
        body = getattr(hops.Hops, name)

        def marked(self: Any, ctx: Any, fn: Any, args: Any, _body: Any = body,
                   _n: str = name) -> Any:  # fmt: skip
            t = now()
            EV.append(("body:" + _n, t, t, 0.0))
            return _body(self, ctx, fn, args)

        setattr(hops.Hops, name, marked)

    run_handle = asyncio.events.Handle._run

    def handle(self: Any) -> None:
        t0, c0 = now(), cpu()
        try:
            run_handle(self)
        finally:
            cb = getattr(self, "_callback", None)
            what = getattr(cb, "__qualname__", None) or type(cb).__name__
            if what == "TaskStepMethWrapper" or "Task" in what:
                coro = getattr(getattr(cb, "__self__", None), "get_coro", lambda: None)()
                what = "task:" + getattr(coro, "__qualname__", "?")
            EV.append(("cb:" + str(what)[:50], t0, now(), cpu() - c0))

    asyncio.events.Handle._run = handle  # type: ignore[method-assign]

    sel = selectors.EpollSelector.select

    def select(self: Any, timeout: Any = None) -> Any:
        t0 = now()
        try:
            return sel(self, timeout)
        finally:
            EV.append(("select", t0, now(), 0.0))

    selectors.EpollSelector.select = select  # type: ignore[method-assign]

    def dump() -> None:
        with open(f"{os.environ.get('WFL_PROBE_OUT', '/tmp/wfl-pp')}.{os.getpid()}", "w") as f:
            json.dump(EV, f)

    atexit.register(dump)


def report(paths: list[str]) -> None:
    offsets: dict[str, list[float]] = {}
    took: dict[str, list[float]] = {}
    totals: list[float] = []
    cpus: dict[str, list[float]] = {}
    segments: list[list[tuple[str, float, float]]] = []
    for path in paths:
        with open(path) as f:
            ev = [tuple(e) for e in json.load(f)]
        ev.sort(key=lambda e: e[2] if e[0].startswith("cb:") or e[0] == "select" else e[1])
        i = 0
        while i < len(ev):
            if ev[i][0] != "_on_news":
                i += 1
                continue
            # the wake-up: the end of the last select before the news callback began
            t0 = max((e[2] for e in ev[:i] if e[0] == "select" and e[2] <= ev[i][1]), default=None)
            end = next((j for j in range(i, len(ev)) if ev[j][0].startswith("body:")), None)
            if t0 is None or end is None:
                break
            seg = [e for e in ev if t0 <= e[1] <= ev[end][1]]
            segments.append([(n, a - t0, b - t0, c) for n, a, b, c in seg])
            i = end + 1
    for seg in segments[2:]:  # (the first two warm up the worker)
        seen: set[str] = set()
        for n, a, b, c in seg:
            if n.startswith("cb:") or n == "select":
                continue
            if n not in seen:
                seen.add(n)
                offsets.setdefault(n, []).append(a * 1e6)
            took.setdefault(n, []).append((b - a) * 1e6)
            cpus.setdefault(n, []).append(c * 1e6)
        totals.append(max(e[2] for e in seg) * 1e6)
    n = len(segments) - 2
    print(f"{n} pick-ups; news wake-up -> body median {statistics.median(totals):.0f} us")
    rows = sorted(offsets, key=lambda k: statistics.median(offsets[k]))
    for name in rows:
        at, spent = statistics.median(offsets[name]), statistics.median(took[name])
        print(f"  {name:24} at {at:7.0f} us, took {spent:6.0f} us "
              f"(CPU {statistics.median(cpus[name]):4.0f}) x{len(took[name]) / n:.1f}")  # fmt: skip
    med = sorted(segments[2:], key=lambda s: max(e[2] for e in s))[len(segments[2:]) // 2]
    print("median pick-up, loop callbacks and selects:")
    for n, a, b, c in med:
        if n.startswith("cb:") or n == "select" or n.startswith("body"):
            print(f"  {a * 1e6:7.0f} -> {b * 1e6:7.0f} us (CPU {c * 1e6:4.0f})  {n}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--report"]:
        report(sys.argv[2:])
    else:
        _instrument()
        from wfl.entry import main

        sys.argv[0] = "wfl"
        main()
