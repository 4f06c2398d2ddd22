"""When a run's work happens: its timers, the work done ahead of them, its quiet time.

The functions here are RunDriver methods (bound in replay.py), except _when_due. A timer due at
T fires `ahead` of it (Worker.arm_ahead) for what only prepares: an attempt's record is written
and fsynced then, and the body starts at T (a sync step waits in its own thread, an `async def`
step on the loop); a sleep ends then, and the run lives at T from that moment (now()). So
neither the disk nor the wake-up chain is what a timed step waits for (issue 16).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .clock import Clock
    from .replay import Pending, RunDriver


def now(self: RunDriver) -> float:
    """The run's time: the clock's, or later while woken ahead for a timer."""
    return max(self.clock.now(), self.not_before)


def _at(
    self: RunDriver,
    p: Pending,
    when: float,
    action: Callable[[Pending], Any],
    *,
    ahead: float = 0.0,
) -> None:
    """Call `action(p)` at `when`, or `ahead` seconds before it (the action then waits for
    p.due itself where it must: an attempt's body, the run's time)."""
    p.due = when
    when -= ahead

    def fire() -> None:
        p.timer = None
        if not self.closing and not p.future.done():
            result = action(p)
            if inspect.iscoroutine(result):
                p.task = self.loop.create_task(result)
                self.acting += 1
                p.task.add_done_callback(self._acted)

    if when <= self.clock.now() or when <= self.state.updated_at:  # (see due_now_or)
        p.timer = self.loop.call_soon(fire)  # due already: no trip through the timer heap
    else:
        p.timer = self.host.call_at(when, fire)


async def _wait_armed(self: RunDriver, n: int, start: float) -> None:
    """An attempt recorded ahead waits on the loop for its time (quiet meanwhile)."""
    self.armed[n] = start
    self.host.activity()  # quiet until then: a fake clock may skip ahead
    try:
        await self.host.until(start)
    finally:
        self.armed.pop(n, None)


def _when_due(clock: Clock, when: float, body: Callable[[], Any]) -> Any:
    """(In a step thread) wait until `when`, then run the step's body."""
    clock.sleep_until(when)
    return body()


def _acted(self: RunDriver, task: asyncio.Task[None]) -> None:
    self.acting -= 1
    self.host.activity()


def quiet_until(self: RunDriver) -> float | None:
    """If nothing is running or buffered, when this run next needs attention."""
    # an attempt fired ahead of its time is busy until it waits for that time (armed)
    busy = max(self.inflight, self.acting) > len(self.armed)
    if busy or self.buffer or self.flushing is not None or self.closing:
        return 0.0  # busy right now
    if self.armed:
        return min(self.armed.values())  # an attempt waits for its due time
    return self.state.wake_time(self.clock.now())
