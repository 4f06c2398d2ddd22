"""Records on their way to the journal: buffered per run, group-committed across runs.

Durability is a service of the worker (Committer): every run's records that became due in one
turn of the loop are written and synced together (a directory: each journal written, then one
sync for all of them; see journal.append_group), and each run goes on as soon as its own are
durable. At most one group is being written at a time; what comes meanwhile goes with the next.

The durability rule: a run's records are written in order, and everything a run buffered is
durable before the run acts on it outside its journal: before an action or mutation attempt
starts (write-ahead), a child run is created, a next run is continued as, the run ends, and
on_complete is called. A query changes nothing, so its attempt is not written ahead: its
records (and a chain of queries') ride with the next group, at the latest with the write-ahead
of the next step that acts. After a crash an unrecorded query simply runs again.

The functions below Committer are RunDriver methods (bound in replay.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from . import journal, records
from .errors import JournalLimitExceeded, StoreUnavailable, WflError
from .records import Record
from .stores.base import Batch, BatchResult, GroupWrite

if TYPE_CHECKING:
    from .aio import AioSync
    from .replay import RunDriver
    from .worker import Worker

log = logging.getLogger(__name__)

# Records nobody waits for (a step's result, the next step's schedule, a query's attempt) wait
# this many turns of the loop for a group that someone waits for (usually the next attempt's
# write-ahead) before they are written on their own; not while a query of their run runs
# (its records go with its chain's next write-ahead). A crash meanwhile loses that progress,
# which the run's next worker redoes (an action whose result was lost counts as an
# interrupted attempt).
QUIET_TURNS = 8
QUIET_MAX_TURNS = 64  # a chain of queries postpones them at most this long


class Committer:
    """The worker's durability service: group commit across runs (see the module docstring)."""

    def __init__(self, host: Worker) -> None:
        self.host = host
        # the store's group commit (stores.base.GroupCommit), else each run's own append
        # in parallel I/O threads (PostgreSQL groups concurrent appends itself)
        self.append_many: Callable[[Sequence[Batch]], list[BatchResult]] | None = getattr(
            host.store, "append_many", None
        )
        self.begin_many: Callable[[Sequence[Batch]], GroupWrite] | None = getattr(
            host.store, "begin_many", None
        )
        self.waiting: list[RunDriver] = []  # drivers whose buffer a next group takes
        self.urgent = False  # someone waits for the next group
        self.writing = 0  # groups being written now
        # A directory's next group is written while the last one syncs (other runs' records:
        # a run's own wait for its group): the disk's commits come back to back, not each
        # after a turn of the loop and a write. PostgreSQL's groups go one at a time.
        self.max_writing = 2 if self.begin_many is not None else 1
        self.armed: str | None = None  # "urgent" or "quiet": a group start is on its way
        self.generation = 0  # of the armed start (an older one does nothing)
        self.postpone = False  # a query ended: the quiet start waits QUIET_TURNS more
        self.loop: asyncio.AbstractEventLoop | None = None
        self.groups = 0  # groups written (for tests and benchmarks)
        self.aio: AioSync | None = None  # the loop's AIO fsync (aio.py), once opened
        self.aio_tried = False

    def _aio(self) -> AioSync | None:
        """The loop's AIO fsync, opened at the first group that needs it."""
        if not self.aio_tried:
            from .aio import open_aio

            assert self.loop is not None
            self.aio_tried = True
            self.aio = open_aio(self.loop)
        return self.aio

    def close(self) -> None:
        """(The worker stopped) let go of the AIO context and its eventfd."""
        if self.aio is not None:
            self.aio.close()
        self.aio = None
        self.aio_tried = False

    def want(self, d: RunDriver, *, urgent: bool) -> asyncio.Future[None]:
        """`d` buffered records: a next group takes them. Returns a future done when they
        are durable. urgent: someone waits for it (the group starts at the next turn)."""
        fut = d.next_flush
        if fut is None:
            if self.loop is None:
                self.loop = asyncio.get_running_loop()
            fut = d.next_flush = self.loop.create_future()
            if d.commit_error is not None:  # nothing more of this run may be written
                _fail(fut, d.commit_error)
                d.next_flush = None
                return fut
            self.waiting.append(d)
        if urgent:
            d.flush_urgent = True
            self.urgent = True
        if self.writing >= self.max_writing:
            return fut  # a group after the current ones
        if urgent:
            if len(self.waiting) == 1 and self.host.alone(d):
                self._start()  # the only live run: its fsync delays nobody, skip the turn
            elif self.armed != "urgent":
                self._arm("urgent")
        elif self.armed is None:
            self._arm("quiet")
        return fut

    def ready(self, d: RunDriver) -> None:
        """`d`'s records, held back while a query of it ran or while it kept its step slot
        for its next step, may go quietly now, after QUIET_TURNS more turns (the chain's next
        query, or the action after it, may still come)."""
        if d.next_flush is None or self.writing >= self.max_writing:
            return  # (after a group, _done arms what is left)
        if self.armed is None:
            self._arm("quiet")
        elif self.armed == "quiet":
            self.postpone = True

    def _arm(self, how: str) -> None:
        assert self.loop is not None
        self.armed = how
        self.generation += 1
        # urgent: after the callbacks of this turn (their records go along); quiet: after
        # QUIET_TURNS turns, time for the workflow code woken by a step's result to call the
        # next step, whose write-ahead then carries both
        turns = 0 if how == "urgent" else QUIET_TURNS
        self.postpone = False
        self.loop.call_soon(self._tick, self.generation, turns, 0)

    def _tick(self, generation: int, turns: int, elapsed: int) -> None:
        if generation != self.generation:
            return  # re-armed (or started) meanwhile
        if self.postpone:  # a query chain goes on: wait for its end (within bounds)
            self.postpone = False
            if elapsed < QUIET_MAX_TURNS:
                turns = QUIET_TURNS
        if turns:
            assert self.loop is not None
            self.loop.call_soon(self._tick, generation, turns - 1, elapsed + 1)
            return
        self._start()

    def _start(self) -> None:
        self.armed = None
        self.generation += 1
        if self.writing >= self.max_writing or not self.waiting:
            return
        # Held back unless someone waits for its records: a run whose query is running (the
        # query's records, and its chain's, go with its next write-ahead), and a run that
        # keeps its slot for its next step (whose attempt comes within a few turns: this
        # step's result goes with it, in one write and one fsync, not in two). A run whose
        # last group is still syncing waits for it (its journal's lock, its records' order).
        drivers = [d for d in self.waiting if _goes(d)]
        if len(drivers) < len(self.waiting):
            self.waiting = [d for d in self.waiting if not _goes(d)]
            self.urgent = any(d.flush_urgent for d in self.waiting)
        else:
            self.waiting = []
            self.urgent = False
        batch: list[tuple[RunDriver, bytes]] = []
        for d in drivers:
            fut, d.next_flush = d.next_flush, None
            d.flush_urgent = False
            assert fut is not None
            if not d.buffer:  # emptied by a failure meanwhile
                if not fut.done():
                    fut.set_result(None)
                continue
            payload = d.buffer[0] if len(d.buffer) == 1 else b"".join(d.buffer)
            d.buffer.clear()
            d.writing_size, d.buffer_size = d.buffer_size, 0
            d.flushing = fut
            batch.append((d, payload))
        if not batch:
            return
        self.writing += 1
        self.groups += 1
        assert self.loop is not None
        alone = len(batch) == 1 and self.host.alone(batch[0][0])
        if self.begin_many is not None:
            self._write_begun(batch, alone=alone)
        elif alone:
            d, payload = batch[0]
            try:
                results: list[BatchResult] = [self._write_one(d, payload)]
            except Exception as exc:
                results = [exc]
            self._done(batch, results)
        elif self.append_many is not None:
            pairs: list[Batch] = [(d.writer, payload) for d, payload in batch]
            written = self.loop.run_in_executor(self.host._io_pool, self.append_many, pairs)
            written.add_done_callback(functools.partial(self._written, batch))
        else:
            self._write_each(batch)

    def _write_begun(self, batch: list[tuple[RunDriver, bytes]], *, alone: bool) -> None:
        """The group written here, synced in an I/O thread (or here, for the only live run:
        blocking the loop then delays nobody)."""
        assert self.begin_many is not None
        assert self.loop is not None
        try:
            group = self.begin_many([(d.writer, payload) for d, payload in batch])
        except Exception as exc:  # a bug: the batches fail, the runs are paused
            self._done(batch, [exc] * len(batch))
            return
        if not group.written:
            self._done(batch, group.finish())
        elif alone:
            error: BaseException | None = None
            try:
                group.sync()
            except Exception as exc:
                error = exc
            self._done(batch, group.finish(error))
        else:
            files = group if isinstance(group, journal.GroupWrite) else None  # (a directory's)
            aio = self._aio() if files is not None else None
            if aio is not None and files is not None:
                try:
                    aio.submit(
                        files.sync_fds(),
                        lambda failed: self._done(batch, files.finish(failed=failed)),
                    )
                    return
                except OSError as exc:  # e.g. a file system without asynchronous fsync
                    log.info("syncing journals in threads: AIO fsync refused (%s)", exc)
                    self.aio = None
            # not the I/O pool: its threads may all wait for these journals' locks (a child
            # reporting to its parent), which only this group's end releases
            synced = self.loop.run_in_executor(_sync_pool(), group.sync)
            synced.add_done_callback(lambda f: self._done(batch, group.finish(f.exception())))

    def _write_one(self, d: RunDriver, payload: bytes) -> BatchResult:
        if self.append_many is None:
            return d.writer.append_frames(payload)
        return self.append_many([(d.writer, payload)])[0]

    def _write_each(self, batch: list[tuple[RunDriver, bytes]]) -> None:
        assert self.loop is not None
        results: list[BatchResult | None] = [None] * len(batch)
        left = [len(batch)]

        def one_done(i: int, f: asyncio.Future[list[Record]]) -> None:
            results[i] = f.exception() or f.result()
            left[0] -= 1
            if not left[0]:
                self._done(batch, [r for r in results if r is not None])

        for i, (d, payload) in enumerate(batch):
            f = self.loop.run_in_executor(self.host._io_pool, d.writer.append_frames, payload)
            f.add_done_callback(functools.partial(one_done, i))

    def _written(
        self, batch: list[tuple[RunDriver, bytes]], f: asyncio.Future[list[BatchResult]]
    ) -> None:
        exc = f.exception()
        self._done(batch, f.result() if exc is None else [exc] * len(batch))

    def _done(self, batch: list[tuple[RunDriver, bytes]], results: list[BatchResult]) -> None:
        self.writing -= 1
        for (d, _), result in zip(batch, results, strict=True):
            fut, d.flushing = d.flushing, None
            d.writing_size = 0
            assert fut is not None
            if isinstance(result, BaseException):
                self._failed(d, fut, result)
                continue
            if result and self.host.drivers.get(d.run_id) is d:  # (a dropped run: read anew)
                d.apply_foreign(result)
            if not fut.done():
                fut.set_result(None)
        if self.waiting and self.urgent and self.armed != "urgent":
            self._arm("urgent")
        elif self.waiting and self.armed is None:
            self._arm("quiet")
        self.host.activity()

    def _failed(self, d: RunDriver, fut: asyncio.Future[None], exc: BaseException) -> None:
        """A run's batch could not be written: nothing after it may be (the journal would
        have a gap). The run is dropped (driver_failed: paused, retried later); whoever
        waits for these records gets the error."""
        d.commit_error = exc
        later, d.next_flush = d.next_flush, None
        d.flush_urgent = False
        if later is not None:
            self.waiting.remove(d)
            _fail(later, exc)
        d.buffer.clear()
        d.buffer_size = 0
        _fail(fut, exc)
        self.host.driver_failed(d, exc)


@functools.cache
def _sync_pool() -> ThreadPoolExecutor:
    """Threads that sync groups (one group at a time per worker; shared by in-process workers)."""
    return ThreadPoolExecutor(2, thread_name_prefix="wfl-commit")


def _held_back(d: RunDriver) -> bool:
    return bool(d.queries_running) or d.held_slot is not None


def _goes(d: RunDriver) -> bool:
    """Whether `d`'s buffered records go with the group starting now."""
    return d.flushing is None and (d.flush_urgent or not _held_back(d))


def _fail(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()  # retrieved: the committer reported it (driver_failed)


# -- RunDriver methods ------------------------------------------------------------------------


def _append(self: RunDriver, record: Record, *, flush_soon: bool = True) -> None:
    """Buffer a record (and apply it to the state). flush_soon=False when the caller
    flushes right away itself."""
    data = journal.frame_checked_values(record)
    limit = self.workflow.manager.journal_limit
    # a run's last records (its end, on_complete's start and return) go in past the limit
    size = self.writer.size() + self.writing_size + self.buffer_size + len(data)
    if size > limit and record["t"] not in ("end", "ocs", "oc"):
        self._journal_full(limit)
        raise JournalLimitExceeded(_journal_limit_message(self.run_id, limit))
    self.buffer.append(data)
    self.buffer_size += len(data)
    self.state.apply(record)
    if flush_soon and self.next_flush is None:  # lands soon, batched with neighbours
        self.host.commit(self, urgent=False)


def _journal_full(self: RunDriver, limit: int) -> None:
    if self.closing:
        return
    self.closing = True
    self._cancel_timers()
    if self.task is not None:
        self.task.cancel()
    error = _journal_limit_message(self.run_id, limit)
    self._append(records.end("failed", self.clock.now(), error=error), flush_soon=False)
    self._spawn(self._flush_then_after_end())


async def _flush_then_after_end(self: RunDriver) -> None:
    await self._await_inflight_attempts()
    if await self._flush_or_pause():
        await self._after_end()


async def flush_or_pause(self: RunDriver) -> bool:
    """Flush; False if the journal could not be written (disk full...): the run is paused
    (the committer told the worker, which drops it, releases its lease and retries it
    later). For the records that end a run, which no attempt or workflow code is left to
    report a failure to."""
    try:
        await self.flush()
    except JournalLimitExceeded:
        raise
    except Exception as exc:
        if exc is not self.commit_error:
            self.host.driver_failed(self, exc)
        return False
    return True


async def flush(self: RunDriver, *, shielded: bool = True) -> None:
    """Make every record buffered so far durable (with the next group commit). Raises what
    the write met (the run is then paused already: see Committer._failed).

    The future is shared by every task of the run waiting for these records, so a waiter
    that may be canceled (the workflow's task: a cancel, an eviction) waits through a shield.
    shielded=False (a turn of the loop sooner) for an attempt's task, which wfl never
    cancels (only a loop torn down with it running does, and then all of them)."""
    fut: asyncio.Future[None]
    if self.buffer:
        fut = self.host.commit(self, urgent=True)
    elif self.flushing is not None:
        fut = self.flushing
    else:
        return
    if not fut.done():
        await (asyncio.shield(fut) if shielded else fut)
        return
    error = fut.exception()  # written already (the only live run writes at once)
    if error is not None:
        raise error


def poll(self: RunDriver) -> None:
    """Pick up records other processes appended (cancel, events, children's ends)."""
    if self.host.drivers.get(self.run_id) is not self:
        return  # closed meanwhile (finished, evicted): its journal is read afresh on load
    if self.flushing is not None:
        # the writer is busy in the I/O thread (flock does not exclude our own threads)
        self._spawn(self._poll_after_flush())
        return
    try:
        foreign = self.writer.poll()
    except StoreUnavailable as exc:
        self.host.store_lost(exc)
        return
    except WflError as exc:
        log.error("%s", exc)
        return
    if foreign:
        self.apply_foreign(foreign)


async def _poll_after_flush(self: RunDriver) -> None:
    while self.flushing is not None:
        await asyncio.wait([self.flushing])
    self.poll()


def apply_foreign(self: RunDriver, foreign: list[Record]) -> None:
    for r in foreign:
        self.state.apply(r)
        t = r["t"]
        if t == "cancel" and not self.finished:
            self._spawn(self._cancel())
        elif t == "event":
            self._deliver_events()
        elif t == "child":
            p = self.pending.get(r["n"])
            if p is not None:
                self._child_finished(p, r)
    self.host.activity()


def _journal_limit_message(run_id: str, limit: int) -> str:
    return (
        f"journal of run {run_id} would exceed journal_limit ({limit} bytes): store big data "
        "elsewhere and pass ids between steps, or raise WorkflowManager(journal_limit=...)"
    )
