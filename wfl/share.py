"""One process of a `wfl worker --processes N` (the supervisor is wfl/processes.py).

Which process drives which run: the store's leases decide, as between any workers, so
correctness does not depend on the split. The split is for speed: N processes racing for each
run would each read its journal and try its lock, N - 1 of them for nothing, and poll it while
it is held. So a process takes its share of the runs (a hash of the run id) at once and looks
at a sibling's only SHARE_DELAY later, with a lock attempt first (no read): by then a living
sibling holds it or has finished it; if the sibling died (or its loop lags), this process
drives it. On a directory, the news of a new run goes to its share's process only (each
process names its share in its wake-up marker, datagrams.py), so the siblings do not even wake
for it (on 2 cores the sibling woken for nothing took CPU from the owner and the client:
pick-up 0.35 ms slower with 2 processes than with 1); a sibling then finds it only if the
owner is gone (the news goes to everyone when the owner's socket refuses) or at its rescan. A short
delay, not a long one: measured on 2 busy cores (bench/wfl_side.py throughput_procs), a 2 s
delay made two processes slower than one (an unlucky process's half bounds the time), racing
(0) and 0.3 s both beat one process. Runs a process creates (children, continue-as-new) are its
own: their parent waits on them here, and no sibling has to wake for them.

A child reports to the supervisor over a pipe in JSON lines (never pickle): `ready` once it
serves, and on a terminal its table's rows every REPORT_EVERY seconds, the events of the
`recent` panel and the user's log lines; off a terminal it writes its event lines itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import live as live_view
from .datagrams import share_of as share_of  # (its home was here)
from .errors import WflError
from .manager import WorkflowDef
from .processes import CHILD_ENV
from .state import RunState, due_now_or
from .store import FileStore
from .worker import Worker, WorkerEvent

if TYPE_CHECKING:
    from .replay import RunDriver
    from .stores.base import Lease

log = logging.getLogger(__name__)

# seconds before a process takes a run of a sibling's share (WFL_SHARE_DELAY: for benchmarks
# of other splits; 0 is every process racing for every run)
SHARE_DELAY = float(os.environ.get("WFL_SHARE_DELAY", "0.3"))
REPORT_EVERY = 0.25  # seconds between snapshots of the table sent to the supervisor


@dataclass(frozen=True)
class Setup:
    """What the supervisor tells a child (CHILD_ENV: index,count,report fd,lifeline fd,live)."""

    index: int
    count: int
    report_fd: int
    lifeline_fd: int
    live: bool


def child_setup() -> Setup | None:
    value = os.environ.get(CHILD_ENV)
    if not value:
        return None
    index, count, report, lifeline, live = value.split(",")
    return Setup(int(index), int(count), int(report), int(lifeline), live == "1")


class ShareWorker(Worker):
    """A Worker that prefers its share of the runs (see the module's docstring)."""

    def __init__(self, *args: Any, index: int, count: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.index = index
        self.count = count
        # news of a new run comes to its share's process only (datagrams.py; a directory's)
        self.listen_share = (index, count) if isinstance(self.store, FileStore) else None
        self.adopted: set[str] = set()  # runs this process created: its own, whatever the hash
        self.held_elsewhere: set[str] = set()  # runs whose lease another process held
        self.once = False
        self.take_all = False

    def owns(self, run_id: str) -> bool:
        return (
            self.count <= 1 or run_id in self.adopted or share_of(run_id, self.count) == self.index
        )

    def mine(self, run_id: str) -> bool:
        """Taken at once (else SHARE_DELAY later). --once: what was due when the drain began
        is split; what becomes due during it (a child's end wakes its parent...) is taken by
        whoever hears first, as its owner may have finished its drain and exited."""
        return self.take_all or self.owns(run_id)

    def shows(self, run_id: str) -> bool:
        """Whether this process's table lists `run_id` when it does not hold it: its own runs,
        but not one another process holds (that one lists it, as it is now)."""
        return self.owns(run_id) and run_id not in self.held_elsewhere

    async def run(
        self,
        *,
        once: bool = False,
        until: Callable[[], bool] | None = None,
        stop_when_idle: bool = False,
    ) -> None:
        self.once = once
        await super().run(once=once, until=until, stop_when_idle=stop_when_idle)

    def scan(self) -> None:
        super().scan()
        self.take_all = self.once  # (see mine)

    def _wake_at(self, run_id: str, when: float) -> None:
        # every wake-up of a run goes through here (found by a scan, news, a lease held by
        # another, eviction): a sibling's run is looked at SHARE_DELAY after its time, or
        # after now if that has passed (a run waiting since before this process started)
        if not self.mine(run_id):
            when = max(when, self.clock.now()) + SHARE_DELAY
        super()._wake_at(run_id, when)

    def _woken(self, run_id: str) -> None:
        # a sibling's run whose SHARE_DELAY is up is like news of a new run: its lease
        # attempt waits while this process has a backlog (parking.py), so one with room
        # takes it first
        if self.mine(run_id):
            self._load(run_id)
        else:
            self._offer(run_id)

    def _consider(self, run_id: str) -> None:
        # News of a sibling's run (a start, an event...): its owner reads the journal and
        # acts; this process only looks SHARE_DELAY later, in case the owner did not. So a
        # new run costs one journal read, not one per process.
        if self.mine(run_id) or run_id in self.drivers:
            super()._consider(run_id)
        else:
            self._wake_at(run_id, self.clock.now())  # (plus the delay: a sibling's)

    def _drive(self, run_id: str, lease: Lease | None) -> None:
        # (every lease attempt's outcome comes here, at once or later: see loading.py)
        if lease is None:
            self.held_elsewhere.add(run_id)  # retried later (lease_retry)
        else:
            self.held_elsewhere.discard(run_id)
        super()._drive(run_id, lease)

    def _open_driver(self, run_id: str) -> RunDriver | None:
        if self.mine(run_id):
            return super()._open_driver(run_id)
        # A sibling's run whose lease was free: its owner is gone, or let it go (finished,
        # or waiting: a backoff, a timer). Take it only if it is due; replaying a waiting
        # run here would be for nothing, and would hold it from its owner when it is due.
        try:
            state = RunState.from_records(self.store.read(run_id))
        except WflError:  # gone, or broken: the worker's own path says so
            return super()._open_driver(run_id)
        wake = state.next_wake_at()
        now = self.clock.now()
        if wake is None:  # finished, or waits for an event: nothing to do here
            self._note_wait(state, None)
            return None
        due = due_now_or(wake, state.updated_at, now)
        if due - self.load_ahead > now:
            self._note_wait(state, wake)
            self._wake_at(run_id, due - self.load_ahead)  # (plus the delay: a sibling's)
            return None
        return super()._open_driver(run_id)

    def create_child(
        self,
        wf: WorkflowDef,
        args: dict[str, Any],
        parent: list[Any],
        run_id: str,
        deadline: float | None = None,
    ) -> str:
        self.adopted.add(run_id)  # (I/O thread; a set's add is atomic)
        return super().create_child(wf, args, parent, run_id, deadline)

    def create_continued(
        self, wf: WorkflowDef, args: dict[str, Any], prev: RunState, run_id: str
    ) -> str:
        self.adopted.add(run_id)
        return super().create_continued(wf, args, prev, run_id)


class Reporter:
    """JSON lines to the supervisor. Written from the loop, the snapshot thread and step
    threads (user log lines): one write per line under a lock. A supervisor that is gone is
    not an error here: the lifeline stops this process."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            if self.closed:
                return
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError:  # EPIPE: the supervisor died
                self.closed = True


class ReportView(live_view.WorkerView):
    """A child's view on a terminal: the table's rows go to the supervisor, which draws one
    table for the whole worker; nothing is written to the terminal here."""

    def __init__(self, worker: ShareWorker, reporter: Reporter) -> None:
        super().__init__(worker, live=False)
        self.share_worker = worker
        self.reporter = reporter
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._report, name="wfl-report", daemon=True)

    def __enter__(self) -> ReportView:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._snapshot()  # the final counts

    def on_event(self, event: WorkerEvent) -> None:
        if event.kind in live_view.RECENT:
            self.reporter.send({"event": live_view.event_fields(event)})

    def on_log(self, record: logging.LogRecord) -> None:
        line = live_view.log_record_line(record)
        self.reporter.send({"print": line.plain, "style": str(line.style)})

    def _report(self) -> None:
        while not self._done.wait(REPORT_EVERY):
            self._snapshot()

    def _snapshot(self) -> None:
        try:
            snap = live_view.collect(self.worker, self._look, self.share_worker.shows)
        except Exception:  # read mid-change by the loop thread: the next one will do
            log.debug("snapshot skipped", exc_info=True)
            return
        self.reporter.send({"snapshot": snap})


def watch_lifeline(worker: Worker, fd: int) -> None:
    """Stop (cleanly, as on SIGTERM) when the supervisor is gone: the pipe whose write end
    only it holds reads as closed, even when it was SIGKILLed."""
    loop = asyncio.get_running_loop()

    def gone() -> None:
        with contextlib.suppress(Exception):
            loop.remove_reader(fd)
        if not worker.draining:
            log.warning("the supervisor of this worker process is gone: stopping")
        worker.stop()

    loop.add_reader(fd, gone)
