"""The only place that reads or waits on time: SystemClock for real use, FakeClock for tests."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio


class Clock(Protocol):
    def now(self) -> float:
        """Epoch seconds."""
        ...

    async def wait(self, until: float | None, wakeup: asyncio.Event, *, idle: bool) -> None:
        """Return when `wakeup` is set or the clock reaches `until` (None: no deadline).

        `idle` says that nothing else is in flight, so a time-skipping clock may jump ahead.
        """
        ...

    # Whether a thread other than the loop's may block in sleep_until (a step thread waiting
    # for its due time); a FakeClock's time moves only with the loop, so it may not.
    blocking_waits: bool

    def sleep_until(self, when: float) -> None:
        """Block the calling thread (never the loop's) until the clock reaches `when`."""
        ...


# asyncio's selector waits in whole milliseconds, rounded up (and the kernel adds its slack),
# so a timer woken by it alone fires 0-1 ms late. An idle worker wakes through asyncio a little
# before the deadline and sleeps the rest in the loop's thread, blocking the loop for at most
# this long, and only when nothing else is in flight.
FINE_WAIT = 0.0015


class SystemClock:
    blocking_waits = True

    def now(self) -> float:
        return time.time()

    def sleep_until(self, when: float) -> None:
        rest = when - time.time()
        if rest > 0.0:
            time.sleep(rest)

    def monotonic(self) -> float:
        return time.monotonic()

    async def wait(self, until: float | None, wakeup: asyncio.Event, *, idle: bool) -> None:
        import asyncio  # here, not at the top: `wfl start` never waits and stays fast

        timeout = None if until is None else until - time.time()
        if timeout is not None and timeout <= 0.0:
            return
        fine = idle and timeout is not None
        if timeout is None or timeout > FINE_WAIT or not fine:
            coarse = timeout - FINE_WAIT if fine and timeout is not None else timeout
            wait_until = getattr(wakeup, "wait_until", None)  # (the worker's: timing.Wakeup)
            if wait_until is not None:
                if await wait_until(coarse) or not fine:
                    return
            else:
                try:
                    await asyncio.wait_for(wakeup.wait(), coarse)
                    return
                except TimeoutError:
                    if not fine:
                        return
        assert until is not None
        rest = until - time.time()
        if rest > 0.0 and not wakeup.is_set():
            time.sleep(rest)


class FakeClock:
    """A clock that moves only when told to, or (with skip=True) jumps to the next timer
    whenever the worker has nothing in flight — months pass in microseconds."""

    blocking_waits = False

    def sleep_until(self, when: float) -> None:
        raise RuntimeError("a FakeClock's time moves only with the worker's loop")

    def __init__(self, start: float = 1_790_000_000.0, *, skip: bool = False) -> None:
        self._now = start
        self.skip = skip
        self.limit: float | None = None  # skipping never goes past this time

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float) -> None:
        self._now = max(self._now, when)

    def jump(self, when: float) -> None:
        """Set the time to `when`, backwards too: an NTP step, a VM restored from a snapshot."""
        self._now = when

    async def wait(self, until: float | None, wakeup: asyncio.Event, *, idle: bool) -> None:
        if until is not None and until <= self._now:
            return
        if idle and self.skip and until is not None:
            self._now = until if self.limit is None else max(self._now, min(until, self.limit))
            return
        if idle and self.skip and self.limit is not None:
            self._now = max(self._now, self.limit)  # nothing to wait for before the limit
            return
        await wakeup.wait()


def iso(ts: float | None) -> str | None:
    """Epoch seconds as an ISO-8601 UTC string (the form used at the edges: JSON, tables)."""
    if ts is None:
        return None
    try:
        return _format(ts, 0) + "+00:00"
    except (ValueError, OverflowError, OSError):
        return None  # NaN, inf, past year 9999 (journals of older wfl): no date can show it


def utc_text(ts: float) -> str:
    """Epoch seconds as "YYYY-MM-DD HH:MM:SS.mmm" (UTC), as tables show times ("?" for a
    value no date can show: NaN, inf, past year 9999)."""
    try:
        return _format(ts, 1)
    except (ValueError, OverflowError, OSError):
        return "?"


# A run's records share seconds: formatting each second once makes the times of a
# 100,000-record journal cheap (datetime formatting costs ~3 us a call).
_SECONDS: dict[int, tuple[str, str]] = {}


def whole_and_micros(ts: float) -> tuple[int, int]:
    """`ts` as whole seconds and microseconds, rounded to the microsecond (half to even) as
    datetime.fromtimestamp rounds it."""
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        whole += 1
        us -= 1_000_000
    elif us < 0:
        whole -= 1
        us += 1_000_000
    return int(whole), us


def _format(ts: float, form: int) -> str:
    """`ts` to the millisecond, rounded to the microsecond (half to even) as
    datetime.fromtimestamp does, then truncated as isoformat(timespec="milliseconds") does;
    form 0: "YYYY-MM-DDTHH:MM:SS.mmm", 1: "YYYY-MM-DD HH:MM:SS.mmm"."""
    second, us = whole_and_micros(ts)
    texts = _SECONDS.get(second)
    if texts is None:
        if len(_SECONDS) > 10_000:
            _SECONDS.clear()
        text = datetime.fromtimestamp(second, UTC).isoformat()[:19]
        texts = _SECONDS[second] = (text, text.replace("T", " "))
    return f"{texts[form]}.{us // 1000:03d}"
