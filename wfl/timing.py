"""When work happens: the worker's timer heap, a run's timers, the work done ahead of them.

The functions here are Worker methods (bound in worker.py: call_at, _fire_due, until,
_next_deadline, _due_now) and RunDriver methods (bound in replay.py). A timer due at
T fires `ahead` of it (Worker.arm_ahead) for what only prepares: an attempt's record is written
and fsynced then, and the body starts at T (a sync step waits in its own thread, an `async def`
step on the loop); a sleep ends then, and the run lives at T from that moment (now()). So
neither the disk nor the wake-up chain is what a timed step waits for (issue 16).
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import StoreUnavailable

if TYPE_CHECKING:
    from .clock import Clock
    from .replay import Pending, RunDriver
    from .worker import Worker

log = logging.getLogger("wfl.worker")

ARM_AHEAD = 0.02  # an attempt due at T is recorded (fsynced) from T - this; it starts at T
LOAD_AHEAD = 0.1  # an evicted run is loaded and replayed this long before its next wake


class _Timer:
    __slots__ = ("canceled", "fn", "when")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.canceled = False

    def cancel(self) -> None:
        # A canceled timer stays in the heap until its time comes (lazy deletion), and a
        # run's timer closes over its driver: an evicted run sleeping 30 days kept its whole
        # RunDriver (state, coroutine, history) alive through it, ~13 KB a run
        self.canceled = True
        self.fn = _nothing


def _nothing() -> None:
    pass


class Wakeup(asyncio.Event):
    """The worker's wake-up event, which its clock can also wait on with a deadline for one
    future and one timer handle: wait_for(event.wait(), timeout) wraps the wait in a task of
    its own, ~4 more callbacks every time the worker's loop wakes (issue 9)."""

    def __init__(self) -> None:
        super().__init__()
        self._waiter: asyncio.Future[bool] | None = None

    def set(self) -> None:
        if not self.is_set():
            super().set()
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(True)

    async def wait_until(self, timeout: float | None) -> bool:
        """Wait until set (True) or for `timeout` seconds (False). One waiter at a time."""
        if self.is_set():
            return True
        if timeout is not None and timeout <= 0.0:
            return False
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            return bool(await waiter)
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


# -- the worker's timer heap ------------------------------------------------------------------


def call_at(self: Worker, when: float, fn: Callable[[], None]) -> _Timer:
    timer = _Timer(when, fn)
    heapq.heappush(self._heap, (when, next(self._seq), timer))
    if self._wakeup is not None and self._heap[0][2] is timer:
        self._wakeup.set()  # earlier than what the loop sleeps towards
    return timer


def _fire_due(self: Worker) -> None:
    now = self.clock.now()
    while self._heap and self._heap[0][0] <= now:
        _, _, timer = heapq.heappop(self._heap)
        if not timer.canceled:
            timer.canceled = True
            try:
                timer.fn()
            except StoreUnavailable as exc:
                self.store_lost(exc)
            except Exception:
                log.exception("internal error in a timer")


def until(self: Worker, when: float) -> asyncio.Future[None]:
    """Done when the clock reaches `when` (a timer on the heap, so that the loop's wait,
    precise when idle, ends then)."""
    assert self._loop is not None
    future: asyncio.Future[None] = self._loop.create_future()

    def fire() -> None:
        if not future.done():
            future.set_result(None)

    if when <= self.clock.now():
        fire()
    else:
        timer = self.call_at(when, fire)
        self._until.add(timer)  # a stopping worker fires these too (channel._shutdown)
        future.add_done_callback(lambda _: self._until.discard(timer))
    return future


def _next_deadline(self: Worker) -> float | None:
    while self._heap and self._heap[0][2].canceled:
        heapq.heappop(self._heap)
    return self._heap[0][0] if self._heap else None


def _due_now(self: Worker) -> bool:
    deadline = self._next_deadline()
    return deadline is not None and deadline <= self.clock.now()


# -- a run's timers ---------------------------------------------------------------------------


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
    now = self.clock.now()
    seen = self.state.updated_at
    # a journal ahead of the clock by more than a worker ever dates records ahead: the clock
    # stepped back (NTP, a VM restore), and a step the journal has reached is due now
    p.due = min(when, now) if when <= seen and seen > now + ARM_AHEAD else when
    when = p.due - ahead

    def fire() -> None:
        p.timer = None
        if not self.closing and not p.future.done():
            result = action(p)
            if inspect.iscoroutine(result):
                p.task = self.loop.create_task(result)
                self.acting += 1
                p.task.add_done_callback(self._acted)

    if when <= now:
        if _is_coroutine_function(action):
            # due already, and the action is a task's: created now, its first step comes in
            # the next turn of the loop (through call_soon, in the one after)
            fire()
            return
        p.timer = self.loop.call_soon(fire)  # due already: no trip through the timer heap
    else:
        p.timer = self.host.call_at(when, fire)


_COROUTINE_FUNCTIONS: dict[Any, bool] = {}  # RunDriver action -> whether it is async


def _is_coroutine_function(action: Callable[..., Any]) -> bool:
    fn = getattr(action, "__func__", action)
    known = _COROUTINE_FUNCTIONS.get(fn)
    if known is None:
        known = _COROUTINE_FUNCTIONS[fn] = inspect.iscoroutinefunction(fn)
    return known


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
    wake = self.state.wake_time(self.clock.now())
    if wake is not None and wake < self.not_before:  # woken ahead: waits for its own time
        return self.not_before
    return wake
