"""Loading a run into the worker: its lease, its records, its code, its driver.

A store may answer a lease attempt later (PostgreSQL's lease_soon: while its session is busy
with a group commit, the attempt goes with the session's next turn instead of blocking the
event loop behind the commit); the worker then carries on in _leased_later, on its loop.

The functions here are Worker methods (bound in worker.py; ShareWorker overrides some).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from . import codestate, journal, records
from .channel import WorkerEvent
from .errors import (
    FlowLoadError,
    JournalCorrupt,
    LeaseLost,
    RunNotFound,
    RunNotStarted,
    StoreUnavailable,
    WflError,
)
from .replay import RunDriver
from .state import RunState
from .stores.base import LeasePending

if TYPE_CHECKING:
    from .stores.base import Lease
    from .worker import Worker

log = logging.getLogger(__name__)

FLOW_RETRY = 30.0  # how soon to retry a run whose flow file does not import


def _load(self: Worker, run_id: str) -> None:
    timer = self._waking.pop(run_id, None)
    if timer is not None:
        timer.cancel()
    if run_id in self.drivers or self.draining or run_id in self.broken:
        return
    if self.offline is not None:
        return  # the store is unreachable: everything is rescanned once it is back
    if len(self.drivers) >= self.max_live:  # bounded memory and file descriptors
        if run_id not in self._admitting:
            self._admitting.add(run_id)
            self._admission.append(run_id)
        return
    lease_soon = getattr(self.store, "lease_soon", None)
    try:
        if lease_soon is None:
            lease = self.store.try_lease(run_id)
        else:
            if run_id in self._leasing:
                return  # asked already: that attempt's outcome comes to _came
            loop = asyncio.get_running_loop()
            outcome = lease_soon(
                run_id, lambda o: loop.call_soon_threadsafe(_came, self, run_id, o)
            )
            if isinstance(outcome, LeasePending):
                self._leasing.add(run_id)  # (backlog meanwhile: parking.py)
                return  # _leased_later carries on
            lease = outcome
    except OSError as exc:
        log.error("cannot lock run %s: %s", run_id, exc)
        return
    self._drive(run_id, lease)


def _came(self: Worker, run_id: str, outcome: Any) -> None:
    self._leasing.discard(run_id)
    if isinstance(outcome, BaseException):
        if isinstance(outcome, StoreUnavailable):
            self.store_lost(outcome)
        else:
            log.error("cannot lock run %s: %s", run_id, outcome)
        return
    self._leased_later(run_id, outcome)


def _leased_later(self: Worker, run_id: str, lease: Lease | None) -> None:
    """The outcome of a lease attempt that the store made later (see the module docstring);
    what _load checked may have changed meanwhile."""
    if lease is not None and (
        run_id in self.drivers
        or self.draining
        or run_id in self.broken
        or self.offline is not None
        or len(self.drivers) >= self.max_live
    ):
        lease.release()
        self._load(run_id)  # (does what each of those calls for: nothing, or admission)
        return
    self._drive(run_id, lease)


def _drive(self: Worker, run_id: str, lease: Lease | None) -> None:
    if lease is None:  # another worker drives it; it may die, so look again soon
        self._wake_at(run_id, self.clock.now() + self.lease_retry())
        return
    try:
        driver = self._open_driver(run_id)
    except BaseException:
        lease.release()
        raise
    if driver is None:
        lease.release()
        return
    self.drivers[run_id] = driver
    self.leases[run_id] = lease
    self.waits.pop(run_id, None)  # live now: the view reads the driver's state
    self.emit("loaded", driver)
    driver.start()
    self._starting += 1  # backlog until its replay has run (parking.py)
    driver.loop.call_soon(self._started)


def _open_driver(self: Worker, run_id: str) -> RunDriver | None:
    try:
        writer = self.store.writer(run_id)
    except (RunNotFound, LeaseLost):
        return None
    try:
        history = writer.read_all()
    except StoreUnavailable:
        writer.close()
        raise
    except RunNotStarted:  # no run: a start cut short (unborn.py)
        writer.close()
        self._not_started(run_id)
        return None
    except (JournalCorrupt, WflError) as exc:
        writer.close()
        self._report_broken(run_id, str(exc))
        return None
    state = RunState.from_records(history)
    if state.next_wake_at() is None:
        writer.close()
        self._note_wait(state, None)  # finished (by another worker?): off the live table
        return None  # finished, or waits for an event that has not come
    try:
        wf = codestate.load_for_run(self.store.notes, state, self.clock.now())
    except FlowLoadError as exc:
        # A half-saved edit must not kill live runs: the run waits (and is retried) until
        # its code imports again. Only a cancellation is finished without the code.
        now = self.clock.now()
        if state.cancel_requested or state.end is not None:
            finish = [] if state.end is not None else [records.end("canceled", now)]
            oc = records.on_complete_done(now, f"FlowLoadError: {exc}")
            writer.append_frames(b"".join(journal.frame(r) for r in [*finish, oc]))
        else:
            log.error("run %s paused: %s", run_id, exc)
            self._emit_raw(WorkerEvent("paused", run_id, state.workflow, detail=str(exc), at=now))
            self._wake_at(run_id, now + FLOW_RETRY)
        writer.close()
        return None
    return RunDriver(self, run_id, writer, history, wf, state=state)


def _not_started(self: Worker, run_id: str) -> None:
    """A journal that holds no record: a start cut short, no run (unborn.py). It is removed
    once nothing touched it for unborn.GRACE, and looked at again then if it is younger."""
    remove = getattr(self.store, "remove_unstarted", None)
    if remove is None or self.only is not None:  # (`wfl run` minds its own runs only)
        return
    try:
        removed, stale_at = remove(run_id, self.clock.now())
    except OSError as exc:
        log.warning("cannot remove %s's journal, which holds no record: %s", run_id, exc)
        return
    if removed:
        log.info("removed %s's journal: it holds no record (a start cut short by a crash)", run_id)
    elif stale_at is not None:
        self._wake_at(run_id, stale_at)
