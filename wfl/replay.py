"""Drive one run: replay its journal into the workflow coroutine, execute what is due, record.

A RunDriver lives inside a worker while its run is active, so the coroutine is kept between
steps (a run of n steps costs O(n), not O(n^2)); after eviction or a restart it is rebuilt by
replaying the journal, which executes nothing that is recorded.

Durability rule: records are buffered and written with one fsync per batch, and that batch is
durable before anything acts on it (an attempt starts, the run ends, on_complete runs).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import logging
import os
import random
import sys
import uuid
from collections.abc import Callable
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import journal, records
from .errors import (
    DeterminismViolation,
    EventTimeout,
    JournalLimitExceeded,
    NonRetryableError,
    SerializationError,
    StepFailed,
    WflError,
)
from .manager import NO_RETRY, RetryPolicy, WorkflowDef
from .records import Record
from .state import EXECUTED_KINDS, RunState, StepState
from .step import Step, StepContext, StepOptions, _current

if TYPE_CHECKING:
    from .worker import Worker as Host

log = logging.getLogger(__name__)

INTERRUPTED = "the worker stopped during this attempt"
CUT_OFF = "the worker shut down and its grace period ended during this attempt"
GROUP_COMMIT_TURNS = 8  # event-loop turns a scheduled flush waits for more records


@dataclass
class Pending:
    """An unfinished step of the live coroutine: the future it awaits and how to run it."""

    n: int
    kind: str
    fn: Any
    args: dict[str, Any]
    policy: RetryPolicy
    timeout: float | None
    future: asyncio.Future[Any]
    timer: Any = None
    task: asyncio.Task[None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class RunDriver:
    def __init__(
        self,
        host: Host,
        run_id: str,
        writer: journal.JournalWriter,
        history: list[Record],
        workflow: WorkflowDef,
    ) -> None:
        self.host = host
        self.run_id = run_id
        self.writer = writer
        self.workflow = workflow
        self.state = RunState.from_records(history)
        self.clock = host.clock
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, Pending] = {}
        self.next_n = 0
        self.buffer: list[bytes] = []
        self.buffer_size = 0
        self.flushing: asyncio.Future[None] | None = None
        self.quiet_flush: object | None = None  # token of the _flush_quietly task to come
        self.task: asyncio.Task[None] | None = None
        self.violation: DeterminismViolation | None = None
        self.closing = False  # finishing, canceled or evicted: no new work starts
        self.finishing = False  # the workflow returned or raised: started steps still run
        self.finished = False
        self.inflight = 0  # attempts and on_complete calls executing now
        self.rng = random.Random()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def replaying(self) -> bool:
        """True while the coroutine is re-issuing calls the journal already holds."""
        return self.next_n in self.state.steps

    def start(self) -> None:
        s = self.state
        if s.end is not None:
            self._spawn(self._after_end())
        elif s.cancel_requested:
            self._spawn(self._cancel())
        else:
            self.task = self.loop.create_task(self._main())

    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.host.track(task)

    async def _main(self) -> None:
        step = Step(self)
        try:
            value = await self.workflow.fn(step, **self._workflow_args())
        except asyncio.CancelledError:
            return  # evicted or canceled; the journal already says all there is
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            await self._finish_failed(self.violation or exc)
            return
        if self.violation is not None:
            await self._finish_failed(self.violation)
            return
        try:
            value = self.workflow.validate_result(value)
            size = len(journal.encode(value))
            if size > self.workflow.manager.result_limit:
                raise SerializationError(
                    f"workflow return value too large ({size} bytes, result_limit is "
                    f"{self.workflow.manager.result_limit}): store big data elsewhere, return ids"
                )
        except WflError as exc:
            await self._finish_failed(exc)
            return
        await self._finish("success", result=value)

    def _workflow_args(self) -> dict[str, Any]:
        return dict(self.state.args)

    async def _finish_failed(self, exc: BaseException) -> None:
        await self._finish("failed", error=describe(exc))

    async def _finish(self, kind: str, *, result: Any = None, error: str | None = None) -> None:
        if self.closing:
            return
        self.closing = self.finishing = True
        await self._await_inflight_attempts()  # siblings run to their end and are recorded
        if self.state.cancel_requested and kind != "canceled":
            return  # a cancel arrived meanwhile; _cancel writes the end
        self._cancel_timers()
        self._append(records.end(kind, self.clock.now(), result=result, error=error))
        try:
            await self.flush()
        except JournalLimitExceeded:
            pass  # _append made room for the end record by failing the run
        await self._after_end()

    async def _await_inflight_attempts(self) -> None:
        tasks = [p.task for p in self.pending.values() if p.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _after_end(self) -> None:
        """Tell a parent run, then call on_complete once; both are redone after a crash only
        if their completion was not recorded."""
        self.closing = True
        ref = self.state.on_complete
        if (ref or self.state.parent) and not self.state.on_complete_ran:
            if self.state.parent:
                await self.host.io(self.host.report_to_parent, self.state)
            error = await self._call_on_complete(ref) if ref else None
            self._append(records.on_complete_done(self.clock.now(), error))
            await self.flush()
        self._close()

    async def _call_on_complete(self, ref: list[str]) -> str | None:
        end = self.state.end or {}
        outcome: dict[str, Any] = {"kind": end.get("kind")}
        if end.get("kind") == "success":
            outcome["return_value"] = end.get("result")
        elif end.get("kind") == "failed":
            outcome["error"] = end.get("error")
        self.inflight += 1
        try:
            fn = self.host.load_function(ref[0], ref[1])
            if inspect.iscoroutinefunction(fn):
                await fn(self.run_id, outcome, self.state.context)
            else:
                await self.loop.run_in_executor(
                    self.host.step_pool, fn, self.run_id, outcome, self.state.context
                )
        except Exception as exc:
            log.info("on_complete of run %s raised %s", self.run_id, describe(exc))
            self.host.emit("on_complete_failed", self, detail=describe(exc))
            return describe(exc)
        finally:
            self.inflight -= 1
        return None

    def _close(self) -> None:
        self.finished = True
        self._cancel_timers()
        self.host.driver_closed(self)

    def record_cut_off(self) -> None:
        """A stopping worker gives up on the attempts still running: record each action's as
        a failed attempt now (retried under its policy by the next worker). Queries and
        mutations need nothing: an unfinished attempt of theirs simply runs again."""
        for p in list(self.pending.values()):
            s = self.state.steps.get(p.n)
            if p.kind == "action" and s is not None and s.running and p.task and not p.task.done():
                self._attempt_failed(p, s.attempts, "Interrupted", CUT_OFF, retryable=True)

    def evict(self) -> None:
        """Drop the live coroutine (the journal holds everything); used for idle runs."""
        self.closing = True
        self._cancel_timers()
        if self.task is not None:
            self.task.cancel()
        self.host.driver_closed(self)

    def _cancel_timers(self) -> None:
        for p in self.pending.values():
            if p.timer is not None:
                p.timer.cancel()
                p.timer = None

    async def _cancel(self) -> None:
        if self.closing and self.state.end is not None:
            return
        self.closing = True
        self._cancel_timers()
        if self.task is not None:
            self.task.cancel()
        for s in self.state.steps.values():
            if s.kind == "workflow" and s.child_id and not s.finished:
                await self.host.io(self.host.cancel_child, s.child_id)
        if self.state.end is None:
            self._append(records.end("canceled", self.clock.now()))
            await self.flush()
        await self._after_end()

    # -- records ----------------------------------------------------------------------------

    def _append(self, record: Record, *, flush_soon: bool = True) -> None:
        """Buffer a record (and apply it to the state). flush_soon=False when the caller
        flushes right away itself."""
        data = journal.frame_checked_values(record)
        limit = self.workflow.manager.journal_limit
        if self.writer.size() + self.buffer_size + len(data) > limit and record["t"] not in (
            "end",
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

    def _journal_full(self, limit: int) -> None:
        if self.closing:
            return
        self.closing = True
        self._cancel_timers()
        if self.task is not None:
            self.task.cancel()
        error = _journal_limit_message(self.run_id, limit)
        self._append(records.end("failed", self.clock.now(), error=error), flush_soon=False)
        self._spawn(self._flush_then_after_end())

    async def _flush_then_after_end(self) -> None:
        await self._await_inflight_attempts()
        await self.flush()
        await self._after_end()

    async def flush(self) -> None:
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

    def poll(self) -> None:
        """Pick up records other processes appended (cancel, events, children's ends)."""
        if self.flushing is not None:
            # the writer is busy in the I/O thread (flock does not exclude our own threads)
            self._spawn(self._poll_after_flush())
            return
        try:
            foreign = self.writer.poll()
        except WflError as exc:
            log.error("%s", exc)
            return
        if foreign:
            self.apply_foreign(foreign)

    async def _poll_after_flush(self) -> None:
        while self.flushing is not None:
            await asyncio.shield(self.flushing)
        self.poll()

    def apply_foreign(self, foreign: list[Record]) -> None:
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

    # -- step calls from workflow code ------------------------------------------------------

    def call_step(
        self, kind: str, fn: Any, args: dict[str, Any] | None, opts: StepOptions
    ) -> asyncio.Future[Any]:
        if kind == "workflow":
            if not isinstance(fn, WorkflowDef):
                raise TypeError(
                    "step.run_workflow() takes a workflow (a @workflow.define function)"
                )
            name = opts.name or fn.name
        elif kind == "sleep":
            name = opts.name or "sleep"
        else:
            if not callable(fn):
                raise TypeError(f"step.run_{kind}() takes a function, not {type(fn).__name__}")
            name = opts.name or str(getattr(fn, "__qualname__", repr(fn)))
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise TypeError(f"args of step {name!r} must be a dict of keyword arguments")
        n = self._next_number()
        args, bad_args = _normalize(args)  # compared and passed as the journal will hold them
        policy = (
            self.workflow.retry_policy_for(kind, opts.retry) if kind in EXECUTED_KINDS else NO_RETRY
        )
        future: asyncio.Future[Any] = self.loop.create_future()
        pending = Pending(n, kind, fn, args, policy, opts.timeout, future)
        recorded = self.state.steps.get(n)
        if recorded is not None:
            self._check_same(recorded, kind, name, args, unstable=opts.unstable_args)
            return self._resume(pending, recorded)
        now = self.clock.now()
        run_at = opts.run_at if opts.run_at is not None else now + (opts.run_after or 0.0)
        extra: dict[str, Any] = {}
        if opts.unstable_args:
            extra["unstable"] = True
        if policy.max_attempts > 1:
            extra["retry"] = policy.to_record()
        extra.update(self._stamp())
        stored_args = args if bad_args is None else {"unserializable": bad_args}
        self._append(records.sched(n, kind, name, stored_args, run_at, now, **extra))
        if bad_args is not None:
            message = f"step {n} ({name}): argument {bad_args}"
            self._append(records.fail(n, 0, "SerializationError", message, None, now))
        return self._resume(pending, self.state.steps[n])

    def call_event(self, name: str, timeout: float | None) -> asyncio.Future[Any]:
        n = self._next_number()
        future: asyncio.Future[Any] = self.loop.create_future()
        pending = Pending(n, "event", None, {}, NO_RETRY, timeout, future)
        recorded = self.state.steps.get(n)
        label = f"event:{name}"
        if recorded is not None:
            self._check_same(recorded, "event", label, {}, unstable=True)
            return self._resume(pending, recorded)
        now = self.clock.now()
        extra: dict[str, Any] = {"event": name}
        if timeout is not None:
            extra["timeout_at"] = now + timeout
            extra["timeout"] = timeout
        extra.update(self._stamp())
        self._append(records.sched(n, "event", label, {}, now, now, **extra))
        return self._resume(pending, self.state.steps[n])

    def call_value(self, kind: str) -> Any:
        """now / random / uuid: generated once, recorded, replayed."""
        n = self._next_number()
        recorded = self.state.steps.get(n)
        if recorded is not None:
            self._check_same(recorded, kind, kind, {}, unstable=True)
            return recorded.result
        now = self.clock.now()
        value: Any = (
            now
            if kind == "now"
            else self.rng.random()
            if kind == "random"
            else str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        )
        self._append(records.sched(n, kind, kind, {}, now, now, **self._stamp()))
        self._append(records.done(n, 1, value, now))
        return value

    def _stamp(self) -> dict[str, Any]:
        """Every step record names the workflow version of the code that wrote it."""
        return {"version": self.workflow.version} if self.workflow.version else {}

    def _next_number(self) -> int:
        if self.violation is not None:
            raise self.violation  # caught by the workflow, it still fails: no new steps
        if self.closing:
            raise asyncio.CancelledError()  # the run is ending: park the coroutine
        n = self.next_n
        self.next_n += 1
        return n

    def _check_same(
        self, recorded: StepState, kind: str, name: str, args: Any, *, unstable: bool
    ) -> None:
        same = recorded.kind == kind and recorded.name == name
        if same and not unstable and not recorded.sched.get("unstable"):
            stored = recorded.args
            same = stored == args or (
                isinstance(stored, dict)
                and "unserializable" in stored
                and _unserializable(args) is not None
            )
        if same:
            return
        violation = DeterminismViolation(
            recorded.n,
            f"{recorded.kind} {recorded.name!r} with args {recorded.args!r}",
            f"{kind} {name!r} with args {args!r}",
            where=_caller_location(),
        )
        if self.violation is None:
            self.violation = violation
        raise violation

    # -- scheduling -------------------------------------------------------------------------

    def _resume(self, p: Pending, s: StepState) -> asyncio.Future[Any]:
        """Settle `p.future` from the journal, or arrange for the step to proceed."""
        if s.outcome == "done":
            p.future.set_result(s.result)
            return p.future
        if s.outcome == "failed":
            p.future.set_exception(_step_failed(s))
            return p.future
        self.pending[p.n] = p
        if p.kind in EXECUTED_KINDS:
            if s.running:  # the journal shows an attempt that never ended: a crash
                self._interrupted(p, s)
            else:
                self._at(p, s.retry_at if s.retry_at is not None else s.run_at, self._execute)
        elif p.kind == "sleep":
            self._at(p, s.run_at, self._wake_sleep)
        elif p.kind == "event":
            self._deliver_events()
            timeout_at = s.sched.get("timeout_at")
            if not p.future.done() and timeout_at is not None:
                self._at(p, float(timeout_at), self._event_timeout)
        elif p.kind == "workflow":
            child = self.state.children_done.get(p.n)
            if child is not None:
                self._child_finished(p, child)
            elif s.child_id is not None:
                p.extra["child"] = s.child_id
                # the child may have ended while no worker held this run
                self.host.check_child(self, p, s.child_id)
            else:
                self._at(p, s.run_at, self._start_child)
        return p.future

    def _at(self, p: Pending, when: float, action: Callable[[Pending], Any]) -> None:
        def fire() -> None:
            p.timer = None
            if not self.closing and not p.future.done():
                result = action(p)
                if inspect.iscoroutine(result):
                    p.task = self.loop.create_task(result)

        if when <= self.clock.now():
            p.timer = self.loop.call_soon(fire)  # due already: no trip through the timer heap
        else:
            p.timer = self.host.call_at(when, fire)

    def _interrupted(self, p: Pending, s: StepState) -> None:
        if p.kind != "action":
            self._at(p, self.clock.now(), self._execute)  # queries/mutations simply run again
            return
        self._attempt_failed(p, s.attempts, "Interrupted", INTERRUPTED, retryable=True)

    def _attempt_failed(
        self, p: Pending, attempt: int, error_type: str, message: str, *, retryable: bool
    ) -> None:
        now = self.clock.now()
        retry_at = None
        if retryable and attempt < p.policy.max_attempts:
            retry_at = now + p.policy.backoff(attempt, self.rng)
        self._append(records.fail(p.n, attempt, error_type, message, retry_at, now))
        s = self.state.steps[p.n]
        kind = "step_retry" if retry_at is not None else "step_failed"
        self.host.emit(kind, self, step=p.n, name=s.name, attempt=attempt, detail=s.error or "")
        if retry_at is not None:
            self._at(p, retry_at, self._execute)
        else:
            self._settle(p, exc=_step_failed(self.state.steps[p.n]))

    def _settle(self, p: Pending, *, result: Any = None, exc: BaseException | None = None) -> None:
        self.pending.pop(p.n, None)
        if p.future.done():
            return
        if exc is not None:
            p.future.set_exception(exc)
            p.future.exception()  # a failure nobody awaits is still recorded: don't warn
        else:
            p.future.set_result(result)
        self.host.activity()

    async def _flush_quietly(self, token: object) -> None:
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

    # -- executing --------------------------------------------------------------------------

    async def _execute(self, p: Pending) -> None:
        async with self.host.slot(self.workflow):
            if self._halted() or self.host.draining:
                return  # a stopping worker starts no attempt
            s = self.state.steps[p.n]
            attempt = s.attempts + 1
            self._append(records.att(p.n, attempt, self.clock.now()), flush_soon=False)
            self.inflight += 1
            try:
                await self.flush()  # write-ahead: the attempt is on disk before it runs
                # a recorded attempt runs even if the worker began stopping meanwhile (its
                # shutdown waits for it): skipped, it would count as a failed attempt
                if self._halted():
                    return
                self.host.emit("step_started", self, step=p.n, name=s.name, attempt=attempt)
                ok, value = await self._call(p, attempt)
            except Exception as exc:  # the write-ahead failed (user errors stay in _call)
                self.host.driver_failed(self, exc)
                return
            finally:
                self.inflight -= 1
                self.host.activity()
        if not self.host.listening:
            self.poll()  # a cancel may have come while the step ran (no datagram to tell us)
        if self.state.cancel_requested or self.finished:
            return  # canceled meanwhile: the result is dropped
        if ok:
            self._append(records.done(p.n, attempt, value, self.clock.now()))
            self.host.emit("step_done", self, step=p.n, name=s.name, attempt=attempt)
            self._settle(p, result=value)
            return
        error: BaseException = value
        retryable = not isinstance(error, NonRetryableError | SerializationError)
        self._attempt_failed(p, attempt, type(error).__name__, str(error), retryable=retryable)

    def _halted(self) -> bool:
        """No step may start: the run is canceled, evicted or failing for want of journal.
        (A run that is merely finishing lets its queued siblings run, as Convex does.)"""
        return (self.closing and not self.finishing) or self.state.cancel_requested

    async def _call(self, p: Pending, attempt: int) -> tuple[bool, Any]:
        token = _current.set(StepContext(self.run_id, p.n, attempt))
        try:
            if inspect.iscoroutinefunction(p.fn):
                call: Any = p.fn(**p.args)
            else:
                ctx = copy_context()
                call = self.loop.run_in_executor(
                    self.host.step_pool, functools.partial(ctx.run, p.fn, **p.args)
                )
            value = await (asyncio.wait_for(call, p.timeout) if p.timeout else call)
            if inspect.isawaitable(value):  # a sync function that returned a coroutine
                value = await value
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return False, TimeoutError(f"attempt took longer than timeout={p.timeout:g} s")
        except Exception as exc:
            return False, exc
        finally:
            _current.reset(token)
        name = self.state.steps[p.n].name
        try:
            data = journal.encode(value)
        except SerializationError as exc:
            return False, SerializationError(f"step {p.n} ({name}) returned a {exc}")
        size = len(data)
        value = journal.decode(data)  # what replay will hand out: tuples become lists
        limit = self.workflow.manager.result_limit
        if size > limit:
            return False, SerializationError(
                f"step return value too large: step {p.n} ({name}) returned {size} bytes, "
                f"result_limit is {limit}; store big data elsewhere and return an id"
            )
        return True, value

    def _wake_sleep(self, p: Pending) -> None:
        self._append(records.done(p.n, 1, None, self.clock.now()))
        self._settle(p)

    def _deliver_events(self) -> None:
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
            self._append(
                records.done(p.n, 1, event["value"], self.clock.now(), event_id=event["id"])
            )
            self._settle(p, result=event["value"])

    def _event_timeout(self, p: Pending) -> None:
        s = self.state.steps[p.n]
        exc = EventTimeout(str(s.sched.get("event")), float(s.sched.get("timeout", 0.0)))
        self._append(records.fail(p.n, 1, "EventTimeout", str(exc), None, self.clock.now()))
        self.pending.pop(p.n, None)
        p.future.set_exception(exc)
        self.host.activity()

    async def _start_child(self, p: Pending) -> None:
        child_wf: WorkflowDef = p.fn
        try:
            child_args = child_wf.validate_args(p.args)
        except WflError as exc:
            self._attempt_failed(p, 1, type(exc).__name__, str(exc), retryable=False)
            return
        # The child's id is derived from this step, so a crash between creating the child and
        # recording it here cannot start a second child: creating it again finds the first.
        child_id = child_run_id(self.run_id, p.n, self.state.restarts)
        await self.host.io(
            self.host.create_child, child_wf, child_args, [self.run_id, p.n], child_id
        )
        p.extra["child"] = child_id
        self._append(records.att(p.n, 1, self.clock.now(), child=child_id))
        await self.flush()
        self.host.notify(child_id)
        self.host.check_child(self, p, child_id)  # it may have ended before we recorded it

    def _child_finished(self, p: Pending, r: Record) -> None:
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
            self._append(records.fail(p.n, 1, etype, message, None, now))
            self._settle(p, exc=_step_failed(self.state.steps[p.n]))

    # -- introspection for the worker -------------------------------------------------------

    def quiet_until(self) -> float | None:
        """If nothing is running or buffered, when this run next needs attention."""
        if self.inflight or self.buffer or self.flushing is not None or self.closing:
            return 0.0  # busy right now
        return self.state.next_wake_at()


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
    return StepFailed(s.n, s.name, s.error_type or "Error", s.message or "")


def _unserializable(args: Any) -> str | None:
    return _normalize(args)[1]


def _normalize(value: Any) -> tuple[Any, str | None]:
    """(value as it reads back from the journal, None) — tuples become lists, as they will
    on replay — or (value, why it cannot be stored)."""
    try:
        return journal.decode(journal.encode(value)), None
    except SerializationError as exc:
        return value, str(exc)


def _journal_limit_message(run_id: str, limit: int) -> str:
    return (
        f"journal of run {run_id} would exceed journal_limit ({limit} bytes): store big data "
        "elsewhere and pass ids between steps, or raise WorkflowManager(journal_limit=...)"
    )


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
