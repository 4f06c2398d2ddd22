"""What long-lived runs need from the driver (SPEC §8): deadlines, continue-as-new, progress.

Like execute.py, these are RunDriver methods written as module functions and bound on the
class in replay.py.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Any

from . import journal, records
from .clock import iso
from .errors import InvalidArguments, SerializationError

if TYPE_CHECKING:
    from .replay import RunDriver

PROGRESS_LIMIT = 64 * 1024  # bytes of one progress value, as msgpack


class ContinuedAsNew:
    """What `step.continue_as_new()` returns; the workflow returns it to end its run."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"ContinuedAsNew({self.run_id!r})"


# -- deadlines -----------------------------------------------------------------------------


def arm_deadline(self: RunDriver) -> bool:
    """Set the run's deadline timer; True if the deadline has already passed (then it is
    being enforced and the workflow code must not run)."""
    deadline = self.state.deadline
    if deadline is None:
        return False
    if deadline <= self.clock.now():
        self._spawn(self._deadline_passed())
        return True

    def fire() -> None:
        if not self.closing:
            self._spawn(self._deadline_passed())

    self.deadline_timer = self.host.call_at(deadline, fire)
    return False


async def _deadline_passed(self: RunDriver) -> None:
    """End the run failed. The end record comes first, at the deadline; steps in flight
    finish and the run drops their outcomes, but the journal keeps them after the end (as on
    cancel), so that a restart keeping such a step neither runs it again nor takes it for
    interrupted. The lease is held, and on_complete waits, until they have."""
    if self.closing or self.state.end is not None or self.state.cancel_requested:
        return
    self.closing = True
    self._cancel_timers()
    if self.task is not None:
        self.task.cancel()
    deadline = self.state.deadline or self.clock.now()
    error = f"DeadlineExceeded: run {self.run_id} did not finish by its deadline {iso(deadline)}"
    self._append(records.end("failed", self.clock.now(), error=error))
    if not await self._flush_or_pause():
        return
    self.host.emit("deadline_exceeded", self, detail=error)
    await self._await_inflight_attempts()
    if await self._flush_or_pause():
        await self._after_end()


# -- continue-as-new -----------------------------------------------------------------------


def continued_run_id(run_id: str, restarts: int) -> str:
    """Derived, so a crash after the next run was created finds it again on replay."""
    digest = hashlib.sha256(f"{run_id}/continued/{restarts}".encode()).hexdigest()
    return digest[: len(run_id)]


async def continue_as_new(self: RunDriver, args: dict[str, Any] | None) -> ContinuedAsNew:
    if self.closing:
        raise asyncio.CancelledError()  # the run is ending already
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise InvalidArguments(
            f"continue_as_new() takes a dict of workflow arguments, not {type(args).__name__}"
        )
    try:
        journal.encode(args)
    except SerializationError as exc:
        raise SerializationError(f"continue_as_new() arguments: {exc}") from None
    args = self.workflow.validate_args(args)
    state = self.state
    new_id = continued_run_id(self.run_id, state.restarts)
    await self.flush()  # what the new run's arguments came from is durable before it exists
    await self.host.io(self.host.create_continued, self.workflow, args, state, new_id)
    self.continued_as = new_id
    return ContinuedAsNew(new_id)


# -- progress ------------------------------------------------------------------------------


async def set_progress(self: RunDriver, value: Any) -> None:
    """Record `value` as the run's progress, unless replay shows it recorded already: calls
    before the last recorded step are history; at the frontier, as many calls as the journal
    holds progress records for that point are."""
    try:
        size = len(journal.encode(value))
    except SerializationError as exc:
        raise SerializationError(f"set_progress(): {exc}") from None
    if size > PROGRESS_LIMIT:
        raise SerializationError(
            f"set_progress(): value too large ({size} bytes, the limit is {PROGRESS_LIMIT}): "
            "publish counts and ids, not data"
        )
    if self.closing:
        return
    after = self.next_n
    seen = self.progress_calls.get(after, 0)
    self.progress_calls[after] = seen + 1
    if self.replaying or seen < self.state.progress_marks.get(after, 0):
        return
    # group commit: it lands with the records the next few loop turns bring (readers see it
    # within milliseconds), not with an fsync of its own per call
    self._append(records.progress(journal.decode(journal.encode(value)), after, self.clock.now()))
