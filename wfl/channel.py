"""A worker's dealings with the world outside its loop: news of runs (the store's listener,
records other processes append), children's results, events for listeners, losing and
regaining the store, and shutdown.

The functions here are Worker methods (bound in worker.py), kept apart from its scheduling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import ops
from .clock import iso
from .errors import LeaseLost, StoreUnavailable, WflError
from .state import RunState
from .store import SCHEDULES_NEWS

if TYPE_CHECKING:
    from .manager import WorkflowDef
    from .replay import Pending, RunDriver
    from .worker import Worker

log = logging.getLogger(__name__)


@dataclass
class WorkerEvent:
    kind: str  # loaded step_started step_done step_failed step_retry run_finished evicted
    run_id: str
    workflow: str = ""
    step: int | None = None
    name: str = ""
    attempt: int = 0
    detail: str = ""
    at: float = 0.0


def report_to_parent(self: Worker, state: RunState) -> None:
    """(I/O thread) Record a child's end in its parent, which this worker may drive."""
    ops.report_to_parent(self.store, self.clock, state)
    if state.parent:
        self._news_threadsafe(str(state.parent[0]))


def cancel_child(self: Worker, child_id: str) -> None:
    """(I/O thread)"""
    with contextlib.suppress(WflError):
        ops.cancel(self.store, self.clock, child_id)
    self._news_threadsafe(child_id)


def create_child(
    self: Worker,
    wf: WorkflowDef,
    args: dict[str, Any],
    parent: list[Any],
    run_id: str,
    deadline: float | None = None,
) -> str:
    """(I/O thread) `deadline`: the parent's; the child's own may only be sooner."""
    return ops.create_run(
        self.store, self.clock, wf, args, parent=parent, run_id=run_id, chain_deadline=deadline
    )


def create_continued(
    self: Worker, wf: WorkflowDef, args: dict[str, Any], prev: RunState, run_id: str
) -> str:
    """(I/O thread) The next run of `prev`'s continue-as-new chain: the same workflow with
    new args, and what the chain carries on (on_complete, context, parent, deadline...)."""
    ref = prev.on_complete  # [file, name] or [file, name, module]: found again by file and name
    on_complete = f"{ref[0]}:{ref[1]}" if ref else None
    return ops.create_run(
        self.store, self.clock, wf, args, run_id=run_id, on_complete=on_complete,
        context=prev.context, parent=prev.parent, chain_deadline=prev.chain_deadline,
        schedule=prev.schedule, scheduled_at=prev.scheduled_at, continued_from=prev.id,
        chain=prev.chain or prev.id,
    )  # fmt: skip


def check_child(self: Worker, driver: RunDriver, p: Pending, child_id: str) -> None:
    """A parent waiting on a child: if the child already ended, record it in the parent.
    In an I/O thread, never on the loop: the parent's journal may be locked by a group
    commit in flight, whose locks only the loop releases (waiting here would deadlock)."""

    async def check() -> None:
        if await self.io(_report_if_ended, self, child_id):
            driver.poll()

    driver._spawn(check())


def _report_if_ended(self: Worker, child_id: str) -> bool:
    """(I/O thread) True if the child has ended (and its end is now in its parent)."""
    try:
        child = ops.read_state(self.store, child_id)
    except WflError:
        return False
    if child.end is None:
        return False
    ops.report_to_parent(self.store, self.clock, child)
    return True


def look_at_schedules(self: Worker) -> None:
    """Start the runs of due schedule slots; then sleep until the next slot (or news)."""
    from . import schedules

    if self.only is not None or self.draining:
        return  # `wfl run` drives its own run only
    if self.schedule_timer is not None:
        self.schedule_timer.cancel()
        self.schedule_timer = None
    try:
        fired, soonest = schedules.fire_due(self.store, self.clock)
    except (WflError, OSError) as exc:
        log.error("schedules: %s", exc)
        fired, soonest = [], self.clock.now() + 5.0
    for f in fired:
        if f.run_id is not None:
            self._news(f.run_id)
        detail = f"slot {iso(f.slot)}" + ("" if f.run_id else ": skipped, the last run is going")
        self._emit_raw(WorkerEvent("scheduled", f.run_id or "", f.name, detail=detail,
                                   at=self.clock.now()))  # fmt: skip
    if soonest is not None:
        self.schedule_timer = self.call_at(soonest, self.look_at_schedules)


POOL_DELAY = 0.05  # seconds after news of new runs before the file pool is topped up


def refill_pool_soon(self: Worker) -> None:
    """Top up the store's pool of empty journal files (wfl/pool.py: a start then creates no
    inode) a moment from now, in an I/O thread: not on the path of the runs just heard of."""
    refill = getattr(self.store, "refill_pool", None)
    if refill is None or not self.listen or self._refilling or self._loop is None:
        return
    self._refilling = True

    def go() -> None:
        if self.draining or self.offline is not None:
            self._refilling = False
            return
        task = asyncio.ensure_future(self.io(refill))
        task.add_done_callback(lambda _: setattr(self, "_refilling", False))
        self.track(task)

    self._loop.call_later(POOL_DELAY, go)


def notify(self: Worker, run_id: str) -> None:
    """Tell other workers, and this one, that `run_id` has news (a new child run...)."""
    self.store.notify(run_id, skip=self._token)
    self._news(run_id)


def _news(self: Worker, run_id: str) -> None:
    """A run's journal changed: pick the records up, or schedule the run if it is due;
    datagrams bring this from other processes, but a worker must not rely on its own."""
    if run_id == SCHEDULES_NEWS:
        self.look_at_schedules()
    elif run_id in self.drivers:
        self.drivers[run_id].poll()
    elif self.offline is None:
        try:
            self.broken.pop(run_id, None)
            self._consider(run_id)
        except StoreUnavailable as exc:
            self.store_lost(exc)
        except WflError:
            pass
    self.activity()


def _news_threadsafe(self: Worker, run_id: str) -> None:
    if self._loop is not None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to tell
            self._loop.call_soon_threadsafe(self._news, run_id)


def emit(self: Worker, kind: str, driver: RunDriver, **info: Any) -> None:
    if kind == "step_done":
        self.stats["steps"] += 1
    elif kind == "step_failed":
        self.stats["failures"] += 1
    if self.on_event is not None:
        event = WorkerEvent(kind, driver.run_id, driver.workflow.name, at=self.clock.now())
        for key, value in info.items():
            setattr(event, key, value)
        self._emit_raw(event)


def _emit_raw(self: Worker, event: WorkerEvent) -> None:
    if self.on_event is not None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("event listener failed")


def _open_listener(self: Worker) -> None:
    # (index, count) of a process of `wfl worker --processes N` on a directory (share.py):
    # it hears of new runs of its share only
    share: tuple[int, int] | None = getattr(self, "listen_share", None)
    opened = self.store.listen() if share is None else self.store.listen(share=share)  # type: ignore[call-arg]
    if opened is None:
        return  # news only by rescanning
    self._token, self._listener = opened
    assert self._loop is not None
    self._loop.add_reader(self._listener.fileno(), self._on_news)
    refill_pool_soon(self)


def _on_news(self: Worker) -> None:
    if self._listener is None:
        return
    try:
        news = self._listener.drain()
    except StoreUnavailable as exc:
        self.store_lost(exc)
        return
    for run_id in news:
        self._news(run_id)
    refill_pool_soon(self)  # (starts took files from it, maybe)


def _close_listener(self: Worker) -> None:
    listener, self._listener = self._listener, None
    if listener is None:
        return
    if self._loop is not None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(listener.fileno())
    listener.close()


def driver_failed(self: Worker, driver: RunDriver, exc: BaseException) -> None:
    """The run's journal could not be written (disk full...): drop it and retry later."""
    if isinstance(exc, StoreUnavailable):
        self.store_lost(exc)  # drops every run
        return
    if isinstance(exc, LeaseLost):
        log.info("%s", exc)
        driver.evict()
        self._wake_at(driver.run_id, self.clock.now() + self.lease_retry())
        return
    if isinstance(exc, WflError):
        log.info("run %s paused: %s", driver.run_id, exc)  # the "paused" event says it too
    else:
        log.error("internal error in run %s; paused", driver.run_id, exc_info=exc)
    self.emit("paused", driver, detail=str(exc))
    driver.evict()
    self._wake_at(driver.run_id, self.clock.now() + 5.0)


RECONNECT_FIRST = 0.5  # seconds before the first retry; doubles up to RECONNECT_MAX
RECONNECT_MAX = 30.0


def store_lost(self: Worker, exc: StoreUnavailable) -> None:
    """The store cannot be reached: our leases cannot be proven any more, so drop every run
    (whatever they were about to record is redone by their next holder), start nothing, and
    retry the connection with backoff until it comes back."""
    if self.offline is not None:
        return
    self.offline = RECONNECT_FIRST
    log.warning("%s; dropping %d runs, retrying in %g s", exc, len(self.drivers), RECONNECT_FIRST)
    self._close_listener()
    for driver in list(self.drivers.values()):
        driver.evict()
    for timer in self._waking.values():
        timer.cancel()
    self._waking.clear()
    self._admission.clear()
    self._admitting.clear()
    self.store.close()
    self.call_at(self.clock.now() + RECONNECT_FIRST, self._reconnect)


def _reconnect(self: Worker) -> None:
    delay = self.offline
    if delay is None or self.draining:
        return
    try:
        self.store.ensure()
        if self.listen:
            self._open_listener()
        self.offline = None
        self.scan()
    except StoreUnavailable as exc:
        self._close_listener()
        self.offline = delay = min(delay * 2, RECONNECT_MAX)
        log.warning("%s; retrying in %g s", exc, delay)
        self.call_at(self.clock.now() + delay, self._reconnect)
        return
    log.warning("store %s is back; serving runs again", self.store.spec)
    self._versions = {}


async def _shutdown(self: Worker) -> None:
    self.draining = True
    self._close_listener()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + self.grace
    while any(d.inflight for d in self.drivers.values()) and loop.time() < deadline:
        assert self._wakeup is not None
        self._wakeup.clear()
        timeout = max(0.0, deadline - loop.time())
        # attempts recorded ahead of their due time still run: their timers still fire
        now = self.clock.now()
        for timer in sorted(self._until, key=lambda t: t.when):
            if timer.when <= now and not timer.canceled:
                timer.canceled = True
                timer.fn()
            elif not timer.canceled:
                timeout = min(timeout, timer.when - now)
                break
        with contextlib.suppress(TimeoutError):  # each finished attempt sets the event
            await asyncio.wait_for(self._wakeup.wait(), timeout)
    for d in list(self.drivers.values()):
        if d.inflight:
            self.cut_off = True
            d.record_cut_off()
        d.halt()  # its code buffers nothing more
        # What it buffered lands before its journal is closed, looked at again after each
        # wait: records buffered meanwhile (a cut-off step's end) may be in a group the
        # committer began in the turn before this resumes. Closed under that group, the
        # journal would wait, on this loop, for the lock only this loop releases.
        while (d.buffer or d.flushing is not None) and d.commit_error is None:
            with contextlib.suppress(WflError):
                await d.flush()
        d.evict()
    for task in list(self._tasks):
        task.cancel()
    self.step_pool.shutdown(wait=False, cancel_futures=True)
    self._io_pool.shutdown(wait=True)
    self._version_watch.close()  # its inotify instance now, not at a garbage collection


def install_signal_handlers(self: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, self.stop)


def _note_wait(self: Worker, state: RunState, wake: float | None) -> None:
    """Remember what a run that is not held live waits for (shown by the live view)."""
    from .why import waits_for

    if state.finished and wake is None:
        self.waits.pop(state.id, None)
    else:
        self.waits[state.id] = (state.workflow, waits_for(state), wake)
