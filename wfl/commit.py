"""A run's records on their way to the journal: buffered, group-committed, polled.

The functions here are RunDriver methods (bound in replay.py), kept apart so that the writer
seam reads on one screen. Durability rule: records are buffered and written with one fsync per
batch, and that batch is durable before anything acts on it (an attempt starts, the run ends,
on_complete runs).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from . import journal, records
from .errors import JournalLimitExceeded, StoreUnavailable, WflError
from .records import Record

if TYPE_CHECKING:
    from .replay import RunDriver

log = logging.getLogger(__name__)

GROUP_COMMIT_TURNS = 8  # event-loop turns a scheduled flush waits for more records


def _append(self: RunDriver, record: Record, *, flush_soon: bool = True) -> None:
    """Buffer a record (and apply it to the state). flush_soon=False when the caller
    flushes right away itself."""
    data = journal.frame_checked_values(record)
    limit = self.workflow.manager.journal_limit
    # a run's last records (its end, on_complete's start and return) go in past the limit
    if self.writer.size() + self.buffer_size + len(data) > limit and record["t"] not in (
        "end",
        "ocs",
        "oc",
    ):
        self._journal_full(limit)
        raise JournalLimitExceeded(_journal_limit_message(self.run_id, limit))
    self.buffer.append(data)
    self.buffer_size += len(data)
    self.state.apply(record)
    if flush_soon and self.quiet_flush is None:  # lands soon, batched with neighbours
        self.quiet_flush = token = object()
        self._spawn(self._flush_quietly(token))


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
    """Flush; if the journal cannot be written (disk full...), pause the run and return
    False: the worker drops it, releases its lease and retries it later. For the records
    that end a run, which no attempt or workflow code is left to report a failure to."""
    try:
        await self.flush()
    except JournalLimitExceeded:
        raise
    except Exception as exc:
        self.host.driver_failed(self, exc)
        return False
    return True


async def flush(self: RunDriver) -> None:
    """Make every buffered record durable (one write + one fsync per batch)."""
    while self.buffer or self.flushing is not None:
        if self.flushing is not None:
            await asyncio.shield(self.flushing)
            continue
        batch = b"".join(self.buffer)
        self.quiet_flush = None  # this write covers what it was waiting for
        self.buffer.clear()
        self.buffer_size = 0
        done = self.loop.create_future()
        self.flushing = done
        try:
            if self.host.alone(self):
                # nothing else could use the loop meanwhile: skip the hop to a thread
                foreign = self.writer.append_frames(batch)
            else:
                foreign = await self.host.io(self.writer.append_frames, batch)
        finally:
            self.flushing = None
            done.set_result(None)
        if foreign:
            self.apply_foreign(foreign)


def poll(self: RunDriver) -> None:
    """Pick up records other processes appended (cancel, events, children's ends)."""
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
        await asyncio.shield(self.flushing)
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


async def _flush_quietly(self: RunDriver, token: object) -> None:
    # Group commit: let the workflow code woken by this record, and the attempt it starts,
    # append theirs first, so that one write + one fsync carries a step's result together
    # with the next step's schedule and attempt. (Nothing acts on unflushed records.)
    for _ in range(GROUP_COMMIT_TURNS):
        await asyncio.sleep(0)
    if self.quiet_flush is not token:
        return  # a flush took the buffer meanwhile; later records scheduled their own
    self.quiet_flush = None
    try:
        await self.flush()
    except Exception as exc:  # disk full, or a bug: pause this run, never hang the worker
        self.host.driver_failed(self, exc)


def _journal_limit_message(run_id: str, limit: int) -> str:
    return (
        f"journal of run {run_id} would exceed journal_limit ({limit} bytes): store big data "
        "elsewhere and pass ids between steps, or raise WorkflowManager(journal_limit=...)"
    )
