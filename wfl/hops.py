"""Which sync steps run on the worker's loop instead of hopping to a step thread.

A hop to a step thread and back costs the loop ~0.1-0.2 ms of CPU on this project's machine
(the pool's queue, two thread wake-ups, the GIL changing hands, the loop's self-pipe): far
more than a short step's body. So a sync step function that has run SHORT_RUNS times in a
row in a thread, each time within SHORT seconds, runs inline on the loop from then on, as
an `async def` step does. One inline run that takes longer than TOO_LONG sends it back to
threads (and it must earn its place again; after MAX_DEMOTIONS, never). Steps with
`timeout=` always run in threads (the loop could not interrupt them), and so do steps started
ahead of their due time (their thread waits for it). An inline body sees no running event
loop, as in a thread (asyncio.run() inside it works).
"""

from __future__ import annotations

import asyncio
import time
from contextvars import Context
from typing import Any

SHORT = 0.0002  # seconds: a body this short costs less than its hop
SHORT_RUNS = 16
TOO_LONG = 0.002
MAX_DEMOTIONS = 3
MAX_FUNCTIONS = 10_000  # functions remembered (a bound, not a cache policy)


class Hops:
    def __init__(self) -> None:
        self.short: dict[Any, int] = {}  # function -> short runs in a row (in threads)
        self.demoted: dict[Any, int] = {}  # function -> times sent back to threads

    def inline(self, fn: Any) -> bool:
        return self.short.get(fn, 0) >= SHORT_RUNS

    def ran(self, fn: Any, seconds: float, *, inline: bool) -> None:
        """(Any thread) `fn`'s body took `seconds`."""
        if inline:
            if seconds > TOO_LONG:
                self.short.pop(fn, None)
                self.demoted[fn] = self.demoted.get(fn, 0) + 1
            return
        if seconds >= SHORT or self.demoted.get(fn, 0) >= MAX_DEMOTIONS:
            self.short[fn] = 0
            return
        if len(self.short) >= MAX_FUNCTIONS and fn not in self.short:
            self.short.clear()
        self.short[fn] = self.short.get(fn, 0) + 1

    def run_inline(self, ctx: Context, fn: Any, args: dict[str, Any]) -> Any:
        """Call `fn(**args)` in `ctx` on the loop's thread, hiding the running loop."""
        loop = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(None)
        t0 = time.perf_counter()
        try:
            return ctx.run(fn, **args)
        finally:
            self.ran(fn, time.perf_counter() - t0, inline=True)
            asyncio.events._set_running_loop(loop)

    def run_timed(self, ctx: Context, fn: Any, args: dict[str, Any]) -> Any:
        """(In a step thread) call `fn(**args)` in `ctx`, timing it."""
        t0 = time.perf_counter()
        try:
            return ctx.run(fn, **args)
        finally:
            self.ran(fn, time.perf_counter() - t0, inline=False)
