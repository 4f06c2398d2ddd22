"""Drive one run: replay its journal into the workflow coroutine, execute what is due, record.

A RunDriver lives inside a worker while its run is active, so the coroutine is kept between
steps (a run of n steps costs O(n), not O(n^2)); after eviction or a restart it is rebuilt by
replaying the journal, which executes nothing that is recorded.

The driver's methods live in three modules along its seams: here replay proper (lifecycle,
step calls, determinism checks, scheduling); commit.py its records on their way to the journal
(the durability rule is stated there); execute.py attempts, retries, timeouts, events, children
and on_complete.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import commit, execute, journal, longrun, records, timing
from .errors import (
    DeterminismViolation,
    JournalLimitExceeded,
    SerializationError,
    StepFailed,
    WflError,
)
from .execute import _caller_location, _normalize, _step_failed, _unserializable, describe
from .execute import child_run_id as child_run_id  # tests and tools import it from here
from .manager import NO_RETRY, RetryPolicy, WorkflowDef
from .records import Record
from .state import EXECUTED_KINDS, RunState, StepState
from .step import Step, StepOptions
from .tracebacks import capture

if TYPE_CHECKING:
    from .stores.base import RunWriter
    from .worker import Worker as Host

log = logging.getLogger(__name__)


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
    due: float = 0.0  # when the step may start: the target of its timer
    extra: dict[str, Any] = field(default_factory=dict)


class RunDriver:
    def __init__(
        self,
        host: Host,
        run_id: str,
        writer: RunWriter,
        history: list[Record],
        workflow: WorkflowDef,
        *,
        state: RunState | None = None,
    ) -> None:
        """`state`: `history` folded already (the worker's load did, to decide on loading it:
        not folded twice on the way to a run's first step), owned by the driver from now."""
        self.host = host
        self.run_id = run_id
        self.writer = writer
        self.workflow = workflow
        self.state = state if state is not None else RunState.from_records(history)
        self.clock = host.clock
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, Pending] = {}
        self.next_n = 0
        self.buffer: list[bytes] = []
        self.buffer_size = 0
        # records on their way (commit.py): the batch being written now and when it is
        # durable, when the buffered ones will be, and why this run can write no more
        self.writing_size = 0
        self.flushing: asyncio.Future[None] | None = None
        self.next_flush: asyncio.Future[None] | None = None
        self.commit_error: BaseException | None = None
        self.flush_urgent = False  # someone waits for the buffered records
        self.held_slot: object | None = None  # a step slot kept for the next step (worker)
        self.slot_chain = 0  # steps in a row on the slot it holds
        self.queries_running = 0  # (their records wait for the next write-ahead)
        self.task: asyncio.Task[None] | None = None
        self.violation: DeterminismViolation | None = None
        self.closing = False  # finishing, canceled or evicted: no new work starts
        self.finishing = False  # the workflow returned or raised: started steps still run
        self.finished = False
        self.canceling = False  # _cancel is winding the run up (it runs once)
        self.inflight = 0  # attempts and on_complete calls executing now
        # working ahead of timers (timing.py): attempts recorded and waiting for their due
        # time (step -> due; in `inflight` too), work begun that has not reached a wait yet,
        # and the run's time once woken ahead for a timer (nothing is dated or seen earlier)
        self.armed: dict[int, float] = {}
        self.acting = 0
        self.not_before = 0.0
        self._rng: random.Random | None = None  # (seeding one costs ~15 us: on first use)
        self.deadline_timer: Any = None
        self.continued_as: str | None = None  # set by step.continue_as_new()
        self.progress_calls: dict[int, int] = {}  # set_progress() calls per frontier

    @property
    def rng(self) -> random.Random:
        if self._rng is None:
            self._rng = random.Random()
        return self._rng

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
        elif not self._arm_deadline():
            self.task = self.loop.create_task(self._main())
            # the replay runs in the task's first turn; this callback comes right after it
            self.acting += 1
            self.loop.call_soon(self._acted, self.task)

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
        if self.continued_as is not None:  # `return await step.continue_as_new(...)`
            new_id = self.continued_as
            await self._finish("success", result={"continued_as": new_id}, continued_as=new_id)
            self.host.notify(new_id)
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
        await self._finish("failed", error=describe(exc), tb=capture(exc))

    async def _finish(
        self,
        kind: str,
        *,
        result: Any = None,
        error: str | None = None,
        tb: Any = None,
        continued_as: str | None = None,
    ) -> None:
        if self.closing:
            return
        if self.not_before > self.clock.now():  # woken ahead for a timer: end after it
            await self.host.until(self.not_before)
            if self.closing:
                return
        self.closing = self.finishing = True
        await self._await_inflight_attempts()  # siblings run to their end and are recorded
        if self.state.cancel_requested and kind != "canceled":
            return  # a cancel arrived meanwhile; _cancel writes the end
        self._cancel_timers()
        end = records.end(kind, self.clock.now(), result=result, error=error, tb=tb,
                          continued_as=continued_as)  # fmt: skip
        self._append(end)
        try:
            if not await self._flush_or_pause():
                return
        except JournalLimitExceeded:
            pass  # _append made room for the end record by failing the run
        await self._after_end()

    async def _await_inflight_attempts(self) -> None:
        # asyncio.wait, not gather: when the waiting task is canceled (a cancel of the run
        # cancels the main task), the attempts must go on, not be canceled with it
        tasks = {p.task for p in self.pending.values() if p.task is not None}
        if tasks:
            await asyncio.wait(tasks)
            for task in tasks:  # retrieved: an attempt cut short by a full journal raises
                if not task.cancelled():
                    task.exception()

    async def _after_end(self) -> None:
        """Tell a parent run, then call on_complete once; both are redone after a crash only
        if their completion was not recorded."""
        self.closing = True
        ref = self.state.on_complete
        # a run that continued as new leaves its parent and on_complete to the chain's end
        pending = (ref or self.state.parent) and not self.state.on_complete_ran
        if pending and self.state.continued_as is None:
            if self.state.parent:
                await self.host.io(self.host.report_to_parent, self.state)
            called = await self._call_on_complete(ref) if ref else (None, None)
            if called is None:
                return  # its start could not be recorded: the run is paused, retried later
            self._append(records.on_complete_done(self.clock.now(), *called))
            if not await self._flush_or_pause():
                return  # on_complete is called again when the run is retried (at least once)
        self._close()

    def _close(self) -> None:
        self.finished = True
        self._cancel_timers()
        self.host.driver_closed(self)

    def evict(self) -> None:
        """Drop the live coroutine (the journal holds everything); used for idle runs."""
        self.halt()
        self.host.driver_closed(self)

    def halt(self) -> None:
        """Run none of this run's code here any more: its timers and coroutine are canceled."""
        self.closing = True
        self._cancel_timers()
        if self.task is not None:
            self.task.cancel()

    def _cancel_timers(self) -> None:
        if self.deadline_timer is not None:
            self.deadline_timer.cancel()
            self.deadline_timer = None
        for p in self.pending.values():
            if p.timer is not None:
                p.timer.cancel()
                p.timer = None

    async def _cancel(self) -> None:
        if (self.closing and self.state.end is not None) or self.canceling:
            return
        self.closing = self.canceling = True
        self._cancel_timers()
        if self.task is not None:
            self.task.cancel()
        for s in self.state.steps.values():
            if s.kind == "workflow" and s.child_id and not s.finished:
                await self.host.io(self.host.cancel_child, s.child_id)
        # In-flight steps finish (their outcome is recorded, and dropped) before the run ends:
        # the lease stays held meanwhile, so a restart cannot run them a second time. A child
        # being created now is canceled by _start_child, which this waits for too.
        await self._await_inflight_attempts()
        if self.state.end is None:
            self._append(records.end("canceled", self.clock.now()))
            if not await self._flush_or_pause():
                return
        await self._after_end()

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
        now = self.now()
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

    def call_event(
        self, name: str, timeout: float | None, *, value_type: Any = None
    ) -> asyncio.Future[Any]:
        n = self._next_number()
        future: asyncio.Future[Any] = self.loop.create_future()
        pending = Pending(n, "event", None, {}, NO_RETRY, timeout, future)
        if value_type is not None:
            pending.extra["type"] = value_type
        recorded = self.state.steps.get(n)
        label = f"event:{name}"
        if recorded is not None:
            self._check_same(recorded, "event", label, {}, unstable=True)
            return self._resume(pending, recorded)
        now = self.now()
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
        now = self.now()
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
            if "type" in p.extra:  # the raw value is recorded; coercing it again is pure
                ok, value = self._event_value(p, s.result)
                if not ok:
                    p.future.set_exception(StepFailed(s.n, s.name, "InvalidArguments", value))
                    return p.future
                p.future.set_result(value)
                return p.future
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
                due = s.retry_at if s.retry_at is not None else s.run_at
                self._at(p, due, self._execute, ahead=self.host.arm_ahead)
        elif p.kind == "sleep":
            self._at(p, s.run_at, self._wake_sleep, ahead=self.host.arm_ahead)
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

    # -- records: commit.py -----------------------------------------------------------------

    _append = commit._append
    _journal_full = commit._journal_full
    _flush_then_after_end = commit._flush_then_after_end
    flush = commit.flush
    _flush_or_pause = commit.flush_or_pause
    poll = commit.poll
    _poll_after_flush = commit._poll_after_flush
    apply_foreign = commit.apply_foreign

    # -- executing: execute.py --------------------------------------------------------------

    _call_on_complete = execute._call_on_complete
    record_cut_off = execute.record_cut_off
    _interrupted = execute._interrupted
    _attempt_failed = execute._attempt_failed
    _settle = execute._settle
    _execute = execute._execute
    _attempt = execute._attempt
    _record_dropped = execute._record_dropped
    _halted = execute._halted
    _call = execute._call
    _wake_sleep = execute._wake_sleep
    _deliver_events = execute._deliver_events
    _event_timeout = execute._event_timeout
    _event_value = execute._event_value
    _start_child = execute._start_child
    _child_finished = execute._child_finished

    # -- timing: timing.py -----------------------------------------------------------------

    now = timing.now
    _at = timing._at
    _acted = timing._acted
    _wait_armed = timing._wait_armed
    quiet_until = timing.quiet_until

    # -- long-lived runs: longrun.py --------------------------------------------------------

    _arm_deadline = longrun.arm_deadline
    _deadline_passed = longrun._deadline_passed
    continue_as_new = longrun.continue_as_new
    set_progress = longrun.set_progress
