"""Executing a run's steps: attempts, retries, timeouts, events, child runs, on_complete.

The functions here are RunDriver methods (bound in replay.py), kept apart from replay proper.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
import os
import sys
from contextvars import copy_context
from typing import TYPE_CHECKING, Any

from . import journal, records
from .errors import (
    DeterminismViolation,
    EventFailed,
    EventTimeout,
    JournalLimitExceeded,
    NonRetryableError,
    SerializationError,
    StepFailed,
    WflError,
)
from .records import Record
from .state import StepState
from .step import StepContext, _current
from .timing import _when_due
from .tracebacks import capture

if TYPE_CHECKING:
    from .manager import WorkflowDef
    from .replay import Pending, RunDriver

log = logging.getLogger(__name__)

INTERRUPTED = "the worker stopped during this attempt"
CUT_OFF = "the worker shut down and its grace period ended during this attempt"
NOT_STARTED = "the run was canceled before this attempt started"


async def _call_on_complete(
    self: RunDriver, ref: list[str]
) -> tuple[str | None, dict[str, Any] | None] | None:
    """Call on_complete; (None, None), or what it raised and its traceback. None if its start
    could not be recorded (the run is paused). At least once: every call that starts is in
    the journal first, and inside it current_step().idempotency_key is the same each time."""
    attempt = self.state.on_complete_calls + 1
    self._append(records.on_complete_started(attempt, self.clock.now()))
    if not await self._flush_or_pause():
        return None
    key = f"{self.run_id}-on_complete" + (f"-{self.state.restarts}" if self.state.restarts else "")
    token = _current.set(StepContext(self.run_id, -1, attempt, key=key))
    end = self.state.end or {}
    outcome: dict[str, Any] = {"kind": end.get("kind")}
    if end.get("kind") == "success":
        outcome["return_value"] = end.get("result")
    elif end.get("kind") == "failed":
        outcome["error"] = end.get("error")
    self.inflight += 1
    try:
        fn = self.host.load_function(*ref)  # [file, name] or [file, name, module]
        if inspect.iscoroutinefunction(fn):
            await fn(self.run_id, outcome, self.state.context)
        else:
            call = functools.partial(copy_context().run, fn, self.run_id, outcome)
            await self.loop.run_in_executor(self.host.step_pool, call, self.state.context)
    except Exception as exc:
        log.info("on_complete of run %s raised %s", self.run_id, describe(exc))
        self.host.emit("on_complete_failed", self, detail=describe(exc))
        return describe(exc), capture(exc)
    finally:
        self.inflight -= 1
        _current.reset(token)
    return None, None


def record_cut_off(self: RunDriver) -> None:
    """A stopping worker gives up on the attempts still running: record each action's as
    a failed attempt now (retried under its policy by the next worker). Queries and
    mutations need nothing: an unfinished attempt of theirs simply runs again."""
    for p in list(self.pending.values()):
        s = self.state.steps.get(p.n)
        if p.kind == "action" and s is not None and s.running and p.task and not p.task.done():
            self._attempt_failed(p, s.attempts, "Interrupted", CUT_OFF, retryable=True)


def _interrupted(self: RunDriver, p: Pending, s: StepState) -> None:
    if p.kind != "action":
        self._at(p, self.clock.now(), self._execute)  # queries/mutations simply run again
        return
    self._attempt_failed(p, s.attempts, "Interrupted", INTERRUPTED, retryable=True)


def _attempt_failed(
    self: RunDriver,
    p: Pending,
    attempt: int,
    error_type: str,
    message: str,
    *,
    retryable: bool,
    tb: dict[str, Any] | None = None,
) -> None:
    now = self.clock.now()
    retry_at = None
    if retryable and attempt < p.policy.max_attempts:
        retry_at = now + p.policy.backoff(attempt, self.rng)
    self._append(records.fail(p.n, attempt, error_type, message, retry_at, now, tb=tb))
    s = self.state.steps[p.n]
    kind = "step_retry" if retry_at is not None else "step_failed"
    self.host.emit(kind, self, step=p.n, name=s.name, attempt=attempt, detail=s.error or "")
    if retry_at is not None:
        self._at(p, retry_at, self._execute, ahead=self.host.arm_ahead)
    else:
        self._settle(p, exc=_step_failed(self.state.steps[p.n]))


def _settle(
    self: RunDriver, p: Pending, *, result: Any = None, exc: BaseException | None = None
) -> None:
    self.pending.pop(p.n, None)
    if p.future.done():
        return
    if exc is not None:
        p.future.set_exception(exc)
        p.future.exception()  # a failure nobody awaits is still recorded: don't warn
    else:
        p.future.set_result(result)
    self.host.activity()


async def _execute(self: RunDriver, p: Pending) -> None:
    await self.host.take_slot(self)
    ran: tuple[int, bool, Any] | None = None
    try:
        ran = await self._attempt(p)
    finally:
        self.host.give_slot(self, keep=ran is not None)  # kept a moment for the next step
    if ran is None:
        return
    attempt, ok, value = ran
    s = self.state.steps[p.n]
    if not self.host.listening:
        self.poll()  # a cancel may have come while the step ran (no datagram to tell us)
    if self.finished:
        return
    if self.state.cancel_requested or self.state.end is not None:
        # canceled, past its deadline, or out of journal meanwhile: the run drops the outcome
        with contextlib.suppress(JournalLimitExceeded):  # a full journal cannot keep it
            self._record_dropped(p, attempt, ok, value)
        return
    if ok:
        self._append(records.done(p.n, attempt, value, self.clock.now()))
        self.host.emit("step_done", self, step=p.n, name=s.name, attempt=attempt)
        self._settle(p, result=value)
        return
    error: BaseException = value
    retryable = not isinstance(error, NonRetryableError | SerializationError)
    self._attempt_failed(
        p, attempt, type(error).__name__, str(error), retryable=retryable, tb=capture(error)
    )


async def _attempt(self: RunDriver, p: Pending) -> tuple[int, bool, Any] | None:
    """Record an attempt, durably unless it is a query's, and run it: (attempt, ok, value),
    or None if it did not run."""
    if self._halted() or self.host.draining:
        return None  # a stopping worker starts no attempt
    s = self.state.steps[p.n]
    attempt = s.attempts + 1
    # Fired ahead of its due time, the attempt is recorded as starting then, and the
    # write-ahead's fsync happens while the step waits for that moment, not after it.
    start = max(self.clock.now(), p.due)
    self._append(records.att(p.n, attempt, start), flush_soon=False)
    self.inflight += 1
    try:
        if p.kind != "query":  # a query changes nothing: its records ride along (commit.py)
            # write-ahead: the attempt is on disk before it runs
            await self.flush(shielded=False)
        # a recorded attempt runs even if the worker began stopping meanwhile (its
        # shutdown waits for it): skipped, it would count as a failed attempt
        if self._halted():
            if self.state.cancel_requested and not self.finished:
                # canceled while the attempt was being recorded: say it never ran, so a
                # restart that keeps this step runs it rather than calling it interrupted
                self._append(records.fail(p.n, attempt, "Canceled", NOT_STARTED,
                                          self.clock.now(), self.clock.now()))  # fmt: skip
            return None
        self.host.emit("step_started", self, step=p.n, name=s.name, attempt=attempt, at=start)
        in_thread = self.clock.blocking_waits and not _is_async(p.fn)
        if start > self.clock.now() and not in_thread:  # the loop waits, then calls
            await self._wait_armed(p.n, start)
            if self._halted():
                return None
        if p.kind == "query":
            self.queries_running += 1
            try:
                ok, value = await self._call(p, attempt, start)
            finally:
                self.queries_running -= 1
                if not self.queries_running:
                    self.host.committer.ready(self)
        else:
            ok, value = await self._call(p, attempt, start)
    except Exception as exc:  # the write-ahead failed (user errors stay in _call)
        if exc is not self.commit_error:  # (that one the committer reported)
            self.host.driver_failed(self, exc)
        return None
    finally:
        self.inflight -= 1
        self.host.activity()
    return attempt, ok, value


def _record_dropped(self: RunDriver, p: Pending, attempt: int, ok: bool, value: Any) -> None:
    """The run was canceled while this attempt ran: the workflow never sees its outcome, but
    the journal keeps it (state.py folds it aside), so that a restart which keeps this step
    neither runs it again nor takes it for interrupted."""
    now = self.clock.now()
    if ok:
        self._append(records.done(p.n, attempt, value, now))
        return
    retry_at = None
    retryable = not isinstance(value, NonRetryableError | SerializationError)
    if retryable and attempt < p.policy.max_attempts:
        retry_at = now + p.policy.backoff(attempt, self.rng)
    self._append(records.fail(p.n, attempt, type(value).__name__, str(value), retry_at, now,
                              tb=capture(value)))  # fmt: skip


def _halted(self: RunDriver) -> bool:
    """No step may start: the run is canceled, evicted or failing for want of journal.
    (A run that is merely finishing lets its queued siblings run, as Convex does.)"""
    return (self.closing and not self.finishing) or self.state.cancel_requested


async def _call(self: RunDriver, p: Pending, attempt: int, start: float = 0.0) -> tuple[bool, Any]:
    token = _current.set(StepContext(self.run_id, p.n, attempt))
    try:
        ahead = max(0.0, start - self.clock.now())  # a sync step's thread waits this long
        hops = self.host.hops
        if _is_async(p.fn):
            call: Any = p.fn(**p.args)
        elif not p.timeout and not ahead and hops.inline(p.fn):  # short: no hop (hops.py)
            call = _done(hops.run_inline(copy_context(), p.fn, p.args))
        else:
            body = functools.partial(hops.run_timed, copy_context(), p.fn, p.args)
            if ahead:  # one wake-up at the due time (this thread's), not the loop's and then this
                body = functools.partial(_when_due, self.clock, start, body)
            call = self.loop.run_in_executor(self.host.step_pool, body)
        if p.timeout:
            ran_out, value = await _within(call, p.timeout + ahead)
            if ran_out:
                return False, TimeoutError(f"attempt took longer than timeout={p.timeout:g} s")
        else:
            value = await call
        if inspect.isawaitable(value):  # a sync function that returned a coroutine
            value = await value
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a TimeoutError of the step's own (socket, urllib...) included
        return False, exc
    finally:
        _current.reset(token)
    name = self.state.steps[p.n].name
    try:
        data, value = journal.roundtrip(value)  # as replay will hand it out: lists for tuples
    except SerializationError as exc:
        return False, SerializationError(f"step {p.n} ({name}) returned a {exc}")
    size = len(data)
    limit = self.workflow.manager.result_limit
    if size > limit:
        return False, SerializationError(
            f"step return value too large: step {p.n} ({name}) returned {size} bytes, "
            f"result_limit is {limit}; store big data elsewhere and return an id"
        )
    return True, value


_ASYNC: dict[Any, bool] = {}  # step function -> whether it is a coroutine function


def _is_async(fn: Any) -> bool:
    known = _ASYNC.get(fn)
    if known is None:
        if len(_ASYNC) > 10_000:  # (a bound for functions made on the fly)
            _ASYNC.clear()
        known = _ASYNC[fn] = inspect.iscoroutinefunction(fn)
    return known


async def _done(value: Any) -> Any:
    return value


async def _within(call: Any, timeout: float) -> tuple[bool, Any]:
    """(True, None) if `call` did not finish within `timeout` seconds (it is canceled), else
    (False, its value). Unlike wait_for, a TimeoutError the call raises itself propagates as
    that: it is the step's own failure, not its timeout."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not done:
        task.cancel()
        await asyncio.wait({task})  # let it unwind, as wait_for does
        if not task.cancelled():
            task.exception()  # whatever it raised while unwinding is moot: the timeout stands
        return True, None
    return False, task.result()


def _wake_sleep(self: RunDriver, p: Pending) -> None:
    # Woken ahead of its end: the workflow code goes on now, at the sleep's end as far as the
    # run can tell (its next step is scheduled from then and armed meanwhile).
    self.not_before = max(self.not_before, p.due)
    # a timer at the end, though nothing waits for it: a worker whose clock skips from timer
    # to timer (the fake clock of tests) is then not left before the run's time
    self.host.until(p.due)
    self._append(records.done(p.n, 1, None, self.now()))
    self._settle(p)


def _deliver_events(self: RunDriver) -> None:
    for p in sorted(self.pending.values(), key=lambda q: q.n):
        if p.kind != "event" or p.future.done():
            continue
        s = self.state.steps[p.n]
        event = self.state.pending_event(str(s.sched.get("event")))
        if event is None:
            continue
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        now = self.clock.now()
        if event["t"] == "evfail":
            message = str(event.get("error"))
            self._append(records.fail(p.n, 1, "EventFailed", message, None, now,
                                      event_id=event["id"]))  # fmt: skip
            self._settle(p, exc=_step_failed(s))
            continue
        ok, value = self._event_value(p, event["value"])
        if not ok:  # consumed all the same: awaiting again must not see the bad value again
            self._append(records.fail(p.n, 1, "InvalidArguments", value, None, now,
                                      event_id=event["id"]))  # fmt: skip
            self._settle(p, exc=_step_failed(s))
            continue
        # the value as sent is recorded (a coerced value need not be msgpack-serializable)
        self._append(records.done(p.n, 1, event["value"], now, event_id=event["id"]))
        self._settle(p, result=value)


def _event_value(self: RunDriver, p: Pending, value: Any) -> tuple[bool, Any]:
    """(True, the value as `await_event(type=)` asks for it) or (False, why it does not fit)."""
    if "type" not in p.extra:
        return True, value
    from .validation import coerce

    name = self.state.steps[p.n].sched.get("event")
    try:
        return True, coerce(value, p.extra["type"], what=f"value of event {name!r}")
    except WflError as exc:
        return False, str(exc)


def _event_timeout(self: RunDriver, p: Pending) -> None:
    s = self.state.steps[p.n]
    exc = EventTimeout(str(s.sched.get("event")), float(s.sched.get("timeout", 0.0)))
    self._append(records.fail(p.n, 1, "EventTimeout", str(exc), None, self.clock.now()))
    self.pending.pop(p.n, None)
    p.future.set_exception(exc)
    self.host.activity()


async def _start_child(self: RunDriver, p: Pending) -> None:
    child_wf: WorkflowDef = p.fn
    try:
        child_args = child_wf.validate_args(p.args)
    except WflError as exc:
        self._attempt_failed(p, 1, type(exc).__name__, str(exc), retryable=False)
        return
    # The child's id is derived from this step, so a crash between creating the child and
    # recording it here cannot start a second child: creating it again finds the first.
    child_id = child_run_id(self.run_id, p.n, self.state.restarts)
    # the child's arguments may come from queries whose records are not durable yet: they
    # are, before the child exists (a restart must not call it with other arguments)
    await self.flush()
    await self.host.io(
        self.host.create_child, child_wf, child_args, [self.run_id, p.n], child_id,
        self.state.deadline,
    )  # fmt: skip
    p.extra["child"] = child_id
    if self.finished:  # (cannot happen while _cancel waits for this task; kept as a guard)
        await self.host.io(self.host.cancel_child, child_id)
        return
    self._append(records.att(p.n, 1, self.clock.now(), child=child_id))
    await self.flush()
    if self.state.cancel_requested:
        # canceled while the child was being created: _cancel did not see it (it was not
        # recorded yet), and waits for this task, so the child is canceled here
        await self.host.io(self.host.cancel_child, child_id)
        return
    self.host.notify(child_id)
    self.host.check_child(self, p, child_id)  # it may have ended before we recorded it


def _child_finished(self: RunDriver, p: Pending, r: Record) -> None:
    if p.future.done():
        return
    if p.timer is not None:
        p.timer.cancel()
        p.timer = None
    now = self.clock.now()
    if r["kind"] == "success":
        self._append(records.done(p.n, 1, r.get("result"), now))
        self._settle(p, result=r.get("result"))
    else:
        error = r.get("error") or "the child run was canceled"
        etype, _, message = error.partition(": ")
        if not message:
            etype, message = ("Canceled" if r["kind"] == "canceled" else "Error"), error
        self._append(records.fail(p.n, 1, etype, message, None, now, tb=r.get("tb")))
        self._settle(p, exc=_step_failed(self.state.steps[p.n]))


def child_run_id(parent_id: str, n: int, restarts: int) -> str:
    digest = hashlib.sha256(f"{parent_id}/{n}/{restarts}".encode()).hexdigest()
    return digest[: len(parent_id)]


def describe(exc: BaseException) -> str:
    if isinstance(exc, StepFailed | DeterminismViolation | WflError):
        return f"{type(exc).__name__}: {exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _step_failed(s: StepState) -> WflError:
    """The exception a failed step raises in workflow code, live and on replay alike."""
    if s.kind == "event" and s.error_type == "EventTimeout":
        return EventTimeout(str(s.sched.get("event")), float(s.sched.get("timeout", 0.0)))
    if s.kind == "event" and s.error_type == "EventFailed":
        return EventFailed(s.message or "", name=str(s.sched.get("event")))
    return StepFailed(s.n, s.name, s.error_type or "Error", s.message or "", s.tb)


def _unserializable(args: Any) -> str | None:
    return _normalize(args)[1]


def _normalize(value: Any) -> tuple[Any, str | None]:
    """(value as it reads back from the journal, None) — tuples become lists, as they will
    on replay — or (value, why it cannot be stored)."""
    try:
        return journal.roundtrip(value)[1], None
    except SerializationError as exc:
        return value, str(exc)


def _caller_location() -> str:
    """file:line of the workflow code that made the step call."""
    wfl_dir = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(wfl_dir + os.sep) and "asyncio" not in filename:
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return ""
