"""The worker: finds due runs, holds their leases, drives them, sleeps until the next timer.

One asyncio loop. Each active run has a RunDriver (its live coroutine). Idle runs are evicted
and remembered only as (wake time, run id) in a heap. Timers of live runs share that heap.
New work arrives as news from the store (`wfl start`, `cancel` and `send-event` notify every
live worker: datagrams for a directory, NOTIFY for PostgreSQL), so an idle worker blocks
instead of polling. The worker talks only to the Store protocol (wfl/stores/base.py).

This module schedules (finding due runs, leases, timers, eviction, slots); channel.py holds the
worker's dealings with the outside (news, the wake-up socket, children, events, shutdown).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import channel, loading, parking, slots, timing
from .channel import WorkerEvent as WorkerEvent  # its home for users and tests
from .clock import Clock, SystemClock
from .commit import Committer
from .dirwatch import updated, version_watch
from .errors import (
    JournalCorrupt,
    LeaseLost,
    RunNotFound,
    StoreUnavailable,
)
from .execute import describe
from .hops import Hops
from .loader import load_function
from .manager import WorkflowDef
from .replay import RunDriver
from .state import RunState, due_now_or
from .stores import open_store
from .stores.base import Lease, Listener, Store
from .timing import ARM_AHEAD, LOAD_AHEAD, Wakeup, _Timer

log = logging.getLogger(__name__)

EVICT_CHECK_EVERY = 0.5  # seconds between looks for runs to evict
EVICT_AFTER = 5.0  # a run idle for longer than this until its next wake gives up its coroutine
LEASE_RETRY = 1.0  # how soon to retry a run another worker holds
RESCAN_EVERY = 10.0  # safety net for missed wake-ups: look for journals that changed
MAX_LIVE = 256  # default cap on runs held live at once
GRACE = 10.0  # default grace period for running steps when the worker stops
DEFAULT_PARALLELISM = 64


class Worker:
    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        *,
        clock: Clock | None = None,
        max_parallelism: int = DEFAULT_PARALLELISM,
        listen: bool = True,
        on_event: Callable[[WorkerEvent], None] | None = None,
        evict_after: float = EVICT_AFTER,
        only: set[str] | None = None,
        grace: float = GRACE,
        max_live: int | None = None,
    ) -> None:
        self.store: Store = open_store(store)
        self.clock: Clock = clock or SystemClock()
        self.max_parallelism = max_parallelism
        self.listen = listen
        self.on_event = on_event
        self.evict_after = evict_after
        self.arm_ahead = ARM_AHEAD
        self.load_ahead = LOAD_AHEAD
        self.only = only  # drive just these runs (`wfl run`); None: every run
        self.grace = grace  # seconds a stopping worker lets running steps finish
        # runs held live at once (each holds its coroutine, a lease and two descriptors);
        # due runs beyond that wait their turn in _admission
        self.max_live = max_live or max(MAX_LIVE, 4 * max_parallelism)
        self._admission: deque[str] = deque()
        self._admitting: set[str] = set()
        self.cut_off = False  # some step was still running when the grace period ended
        self._evict_checked = float("-inf")
        self.drivers: dict[str, RunDriver] = {}
        self.leases: dict[str, Lease] = {}
        self.broken: dict[str, str] = {}  # run id -> why it cannot be driven (corrupt...)
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._waking: dict[str, _Timer] = {}  # evicted/unloaded run -> its wake timer
        self.schedule_timer: _Timer | None = None  # the next slot of any schedule
        # what each run not held live waits for, for the live view: run id -> (workflow,
        # what it waits for or None (not known yet: the view looks), next wake or None)
        self.waits: dict[str, tuple[str, str | None, float | None]] = {}
        self._until: set[_Timer] = set()  # timers of until(): a stopping worker fires them too
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.draining = False
        self._listener: Listener | None = None
        self._token = ""
        self._versions: dict[str, object] = {}  # what the last rescan saw
        self._rescanning = False
        self._refilling = False  # a top-up of the store's file pool is on its way
        self._version_watch = version_watch(self.store)  # what changed, for rescans
        self.offline: float | None = None  # the store is unreachable: next retry's delay
        self.step_pool = ThreadPoolExecutor(max_parallelism, thread_name_prefix="wfl-step")
        self._io_pool = ThreadPoolExecutor(self.store.io_threads, thread_name_prefix="wfl-io")
        self.committer = Committer(self)  # group commit of every run's records
        self.hops = Hops()  # which sync steps are short enough to run on the loop
        self._global_slots: asyncio.Semaphore | None = None
        self._owner_slots: dict[object, asyncio.Semaphore] = {}  # WorkflowDef, manager
        self._workflow_slots: dict[WorkflowDef, list[asyncio.Semaphore]] = {}  # all three
        self._holding: list[list[Any]] = []  # held slots: [driver, token, turns left] (slots.py)
        self._slot_ticking = False
        # the backlog, which delays lease attempts on new runs (parking.py)
        self.slot_waiting: dict[asyncio.Semaphore, int] = {}  # runs waiting for each
        self._leasing: set[str] = set()  # lease attempts the store answers later
        self._starting = 0  # drivers started in this turn (their replay not run yet)
        self.stats = {"steps": 0, "runs_finished": 0, "failures": 0}

    # -- public entry points ----------------------------------------------------------------

    def run_sync(self, *, once: bool = False) -> None:
        asyncio.run(self.run(once=once))

    async def run(
        self,
        *,
        once: bool = False,
        until: Callable[[], bool] | None = None,
        stop_when_idle: bool = False,
    ) -> None:
        """Drive runs. once: stop when nothing is due now. until: stop when it returns True
        and nothing is in flight. stop_when_idle: stop when no timer is left to wait for."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if once:  # a drain that never waits for a timer does not work ahead of any either
            self.arm_ahead = self.load_ahead = 0.0
        self._wakeup = Wakeup()
        self._global_slots = asyncio.Semaphore(self.max_parallelism)
        try:
            self.store.ensure()
            if self.listen:
                self._open_listener()
            self.scan()
            self.look_at_schedules()
        except StoreUnavailable as exc:
            if once:
                raise  # nothing to drain from a store we cannot reach: say so
            self.store_lost(exc)  # retried with backoff; nothing runs meanwhile
        last_scan = self.clock.now()
        try:
            while True:
                self._fire_due()
                if self._stopping:
                    break
                busy = self._busy()
                self._evict_idle(throttled=busy and not self._admission)
                if self._admission:
                    busy = busy or self._admit_waiting()
                settled = not busy and not self._admission
                if settled and (once or (until is not None and until())):
                    if not self._due_now():
                        break
                    continue
                if self.listen and self.clock.now() - last_scan > RESCAN_EVERY:
                    if self.offline is None and not self._rescanning:
                        self._rescanning = True  # (a store lost meanwhile: _task_done)
                        self.track(loop.create_task(self._rescan()))
                    last_scan = self.clock.now()
                deadline = self._next_deadline()
                if settled and stop_when_idle and self._only_schedules_ahead():
                    break
                if self.listen and (deadline is None or deadline - self.clock.now() > RESCAN_EVERY):
                    deadline = self.clock.now() + RESCAN_EVERY
                await self.clock.wait(deadline, self._wakeup, idle=not busy)
                self._wakeup.clear()
                await asyncio.sleep(0)  # let woken workflow code run before the next tick
        finally:
            await self._shutdown()
            self.committer.close()

    def stop(self) -> None:
        """Stop taking work; running steps may finish (see run()'s shutdown)."""
        self._stopping = True
        self.draining = True
        self.activity()

    # -- finding work -----------------------------------------------------------------------

    def scan(self) -> None:
        """Schedule every unfinished run at its wake time (journals that did not change since
        the index last saw them are not read)."""
        self._versions = self._version_watch.snapshot()  # before reading: a change is seen
        now = self.clock.now()
        listed = self.store.summaries()
        for s in listed:
            if s.broken:
                self._report_broken(s.id, str(s.status["error"]))
            elif self.only is not None and s.id not in self.only:
                continue
            elif s.wake_at is not None:
                self._wake_at(s.id, due_now_or(s.wake_at, s.updated_at, now) - self.load_ahead)
                self.waits[s.id] = (str(s.status["workflow"]), None, s.wake_at)
            elif s.status["state"] == "in_progress":  # waits for an event
                self.waits[s.id] = (str(s.status["workflow"]), None, None)
            else:
                self.waits.pop(s.id, None)  # finished meanwhile (another worker drove it)
        for run_id in self._versions.keys() - {s.id for s in listed}:
            self._consider(run_id)  # no run (unborn.py), or one made since: a look tells

    def rescan(self) -> None:
        # the safety net for lost wake-ups: look again at every run that changed, sleeping
        # ones too (a dropped datagram must not strand a cancel until the run's own timer)
        self._rescanned(self._version_watch.changes(self._versions))

    async def _rescan(self) -> None:
        """rescan() asking what changed off the loop (a full look at 10,000 journals takes
        ~100 ms: a timer due meanwhile would wait); the changed runs are looked at on it."""
        try:
            changes = await self.io(self._version_watch.changes, self._versions)
        finally:
            self._rescanning = False
        if self.offline is None and not self.draining:
            self._rescanned(changes)

    def _rescanned(self, changes: dict[str, object | None]) -> None:
        self._versions = updated(self._versions, changes)
        for run_id, version in changes.items():
            if version is not None and run_id not in self.drivers:  # (None: gone)
                self._consider(run_id)
        self.look_at_schedules()  # the safety net for schedule news, too

    def lease_retry(self) -> float:  # another worker holds the run; it may die: look again
        return LEASE_RETRY * (0.5 + _jitter())

    def _consider(self, run_id: str) -> None:
        """Look at a run from its journal alone and schedule a wake-up if it needs one."""
        if run_id in self.drivers:
            self.drivers[run_id].poll()
            return
        if self.only is None and run_id not in self.waits and run_id not in self._waking:
            self._offer(run_id)  # news of a run not seen yet (a start): one read, in _load
            return
        try:
            state = RunState.from_records(self.store.read(run_id))
        except RunNotFound:
            return
        except JournalCorrupt as exc:
            self._report_broken(run_id, str(exc))
            return
        if not state.id:  # no "run" record yet: being created; its creator will notify
            return
        if self.only is not None and run_id not in self.only:
            related = (state.parent[0] if state.parent else None, state.continued_from)
            if not any(r in self.only for r in related if r):
                return
            self.only.add(run_id)  # a child of a run we drive, or the next run of its chain
        wake = state.next_wake_at()
        self._note_wait(state, wake)
        if wake is None:
            return
        now = self.clock.now()
        when = due_now_or(wake, state.updated_at, now) - self.load_ahead
        self._wake_at(run_id, when)  # (a subclass may put it off: a sibling's share)
        timer = self._waking.get(run_id)
        if timer is not None and timer.when <= now:
            # due (a new run, a cancel, an event): load it in this turn of the loop rather
            # than through the timer heap in the next one (start to first step, issue 16);
            # _load schedules its own retry where it must (lease held, flow broken)
            self._load(run_id)

    def _wake_at(self, run_id: str, when: float) -> None:
        old = self._waking.get(run_id)
        if old is not None:
            if old.when <= when and not old.canceled:
                return
            old.cancel()
        self._waking[run_id] = self.call_at(when, lambda: self._woken(run_id))

    def _woken(self, run_id: str) -> None:
        """A run's wake-up time came (ShareWorker parks a sibling's run here)."""
        self._load(run_id)

    # -- loading a run: loading.py ----------------------------------------------------------

    _load = loading._load
    _leased_later = loading._leased_later
    _drive = loading._drive
    _open_driver = loading._open_driver
    _not_started = loading._not_started

    # -- new runs' lease attempts delayed while this worker has a backlog: parking.py -------

    _offer = parking._offer
    _started = parking._started
    count_waiting = parking.count_waiting

    def _report_broken(self, run_id: str, why: str) -> None:
        if self.broken.get(run_id) != why:
            log.error("%s", why)
            self._emit_raw(WorkerEvent("broken", run_id, detail=why, at=self.clock.now()))
        self.broken[run_id] = why

    # -- timers: timing.py -------------------------------------------------------------------

    call_at = timing.call_at
    _fire_due = timing._fire_due
    until = timing.until
    _next_deadline = timing._next_deadline
    _due_now = timing._due_now

    def _only_schedules_ahead(self) -> bool:
        """No timer is left but the next schedule slot (which would come forever)."""
        return all(t.canceled or t is self.schedule_timer for _, _, t in self._heap)

    @property
    def listening(self) -> bool:
        """Whether other processes' news reach this worker (else it rescans)."""
        return self._listener is not None

    def _busy(self) -> bool:
        """Something is executing or about to: the clock must not skip ahead."""
        now = self.clock.now()
        for d in self.drivers.values():
            quiet = d.quiet_until()
            if quiet is not None and quiet <= now:
                return True
        return bool(self._tasks)

    def _evict_idle(self, *, throttled: bool) -> None:
        now = self.clock.now()
        if throttled and 0 <= now - self._evict_checked < EVICT_CHECK_EVERY:
            return  # while busy, a look every so often is enough: idle runs only cost memory
        self._evict_checked = now
        for run_id, d in list(self.drivers.items()):
            if d.closing or d.inflight:  # inflight: an attempt recorded, waiting for its time
                continue
            quiet = d.quiet_until()
            # with runs waiting for room, any run idle until a later time makes room now; never
            # one due within load_ahead: it would be loaded again at once
            keep = self.load_ahead if self._admission else max(self.evict_after, self.load_ahead)
            if quiet is None or quiet - now > keep:
                d.evict()
                self.emit("evicted", d)
                if quiet is not None:
                    self._wake_at(run_id, quiet - self.load_ahead)

    # -- services to drivers ----------------------------------------------------------------

    def alone(self, driver: RunDriver) -> bool:
        """`driver` is the only live run: blocking the loop for its fsync delays nobody."""
        return len(self.drivers) == 1 and driver.inflight <= 1

    def commit(self, driver: RunDriver, *, urgent: bool) -> asyncio.Future[None]:
        """The driver's buffered records go with the next group commit (commit.py)."""
        return self.committer.want(driver, urgent=urgent)

    def activity(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if isinstance(exc, StoreUnavailable):
                self.store_lost(exc)
            elif isinstance(exc, LeaseLost):
                log.info("%s", exc)  # the run was dropped; its next holder carries on
            else:
                log.error("internal error: %s", describe(exc) if exc else "?", exc_info=exc)
        self.activity()

    async def io(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)

    # -- step slots: slots.py -----------------------------------------------------------

    take_slot = slots.take_slot
    give_slot = slots.give_slot
    _slot_tick = slots._slot_tick
    _slot_semaphores = slots._slot_semaphores

    def driver_closed(self, driver: RunDriver) -> None:
        if self.drivers.get(driver.run_id) is driver:
            del self.drivers[driver.run_id]
            if not driver.finished:  # evicted: it waits, and the live view still lists it
                self._note_wait(driver.state, driver.state.next_wake_at())
            self._let_go(driver, self.leases.pop(driver.run_id, None))
            if driver.finished:
                self.stats["runs_finished"] += 1
                end = driver.state.end or {}
                self.emit("run_finished", driver, detail=str(end.get("kind", "")))
            self._admit_waiting()
        self.activity()

    def _let_go(self, driver: RunDriver, lease: Lease | None) -> None:
        """Close a closed run's journal and release its lease once no group commit holds
        them: a group begun on the loop holds its journals' locks until the loop hears that
        its sync ended, so closing the journal before that would wait for the lock on the
        loop itself, forever (the group may be one the run's last records began)."""
        if driver.flushing is not None and self.committer.begin_many is not None:
            driver.flushing.add_done_callback(lambda _: self._let_go(driver, lease))
            return
        driver.writer.close()
        if lease is not None:
            lease.release()

    def _admit_waiting(self) -> bool:
        """Load waiting runs while there is room; True if any was loaded."""
        admitted = False
        while self._admission and len(self.drivers) < self.max_live and not self.draining:
            run_id = self._admission.popleft()
            self._admitting.discard(run_id)
            self._load(run_id)
            admitted = True
        return admitted

    def load_function(self, path: str, name: str, module: str = "") -> Any:
        return load_function(path, name, module)

    # -- news, children, events, wake-up socket, shutdown: channel.py ----------------------

    report_to_parent = channel.report_to_parent
    cancel_child = channel.cancel_child
    create_child = channel.create_child
    create_continued = channel.create_continued
    look_at_schedules = channel.look_at_schedules
    check_child = channel.check_child
    notify = channel.notify
    _news = channel._news
    _news_threadsafe = channel._news_threadsafe
    emit = channel.emit
    _note_wait = channel._note_wait
    _emit_raw = channel._emit_raw
    _open_listener = channel._open_listener
    _on_news = channel._on_news
    _close_listener = channel._close_listener
    store_lost = channel.store_lost
    driver_failed = channel.driver_failed
    _reconnect = channel._reconnect
    _shutdown = channel._shutdown
    install_signal_handlers = channel.install_signal_handlers


def _jitter() -> float:
    return int.from_bytes(os.urandom(2), "big") / 65536
