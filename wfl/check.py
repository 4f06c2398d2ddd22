"""`wfl check FLOW.py`: replay unfinished runs against the current code, executing nothing,
and report each run that the code would break: the first divergence (what the journal holds,
what the code now calls), or a replay that cannot reach the end of the recorded history (it
raises, or returns before a recorded step), with the error and its file:line."""

from __future__ import annotations

import asyncio
import copy
import os
import sys
from dataclasses import dataclass
from types import FrameType
from typing import Any

from .clock import SystemClock
from .errors import DeterminismViolation, JournalCorrupt, RunNotFound, WflError
from .execute import describe
from .loader import load_workflow, module_name
from .manager import WorkflowDef
from .replay import RunDriver
from .state import RunState
from .stores.base import Store
from .tracebacks import capture, where

STABLE_ROUNDS = 5  # loop turns without a new step call: the coroutine is blocked


@dataclass
class CheckResult:
    run_id: str
    workflow: str
    ok: bool
    replayed: int  # recorded steps the code re-issued identically
    message: str


def check_flow(store: Store, flow_path: str) -> list[CheckResult]:
    flow = os.path.abspath(flow_path)
    module = module_name(flow)  # a release in a new directory checks the runs of its module
    results = []
    for run_id in sorted(store.run_ids()):
        try:
            history = store.read(run_id)
        except JournalCorrupt as exc:
            results.append(CheckResult(run_id, "?", False, 0, str(exc)))
            continue
        except RunNotFound:
            continue
        state = RunState.from_records(history)
        if state.finished or (state.flow != flow and (not state.module or state.module != module)):
            continue
        results.append(asyncio.run(_check_run(run_id, history, state, flow)))
    return results


async def _check_run(run_id: str, history: list[Any], state: RunState, flow: str) -> CheckResult:
    try:
        wf = load_workflow(flow, state.workflow)
    except WflError as exc:
        return CheckResult(run_id, state.workflow, False, 0, str(exc))
    host = _DryHost()
    watch = _Watch(wf)
    driver = RunDriver(host, run_id, _NoWriter(), history, watch.workflow)  # type: ignore[arg-type]
    with watch:
        driver.start()
        last, stable = -1, 0
        while stable < STABLE_ROUNDS and driver.task is not None and not driver.task.done():
            await asyncio.sleep(0)
            if driver.violation is not None or watch.ended:
                break
            stable = stable + 1 if driver.next_n == last else 0
            last = driver.next_n
    if driver.task is not None and not driver.task.done():
        driver.task.cancel()  # blocked on a step, or writing its end: a check writes nothing
    recorded = len(state.steps)
    replayed = min(driver.next_n, recorded)
    violation = driver.violation
    if violation is None and isinstance(watch.raised, DeterminismViolation):
        violation = watch.raised
    if violation is None and driver.task is not None and driver.task.done():
        raised = driver.task.exception() if not driver.task.cancelled() else None
        if isinstance(raised, DeterminismViolation):
            violation = raised
    if violation is not None:
        return CheckResult(run_id, state.workflow, False, violation.step, _describe(violation))
    # The code must replay the whole recorded history: raising, or returning before the last
    # recorded step, is a run the worker would fail (or end) differently from its journal.
    short = replayed < recorded
    missed = f"before recorded step {replayed} ({_name(state, replayed)})" if short else ""
    if watch.raised is not None:
        at = where(capture(watch.raised), relative_to=os.getcwd()) or "?"
        when = missed or f"after the last of {recorded} recorded steps"
        message = f"replay raises {describe(watch.raised)} at {at}, {when}"
        return CheckResult(run_id, state.workflow, False, replayed, message)
    if watch.returned and short:
        message = f"the workflow returns {missed} at {watch.returned_at or '?'}"
        return CheckResult(run_id, state.workflow, False, replayed, message)
    return CheckResult(
        run_id, state.workflow, True, replayed, f"ok: {replayed} of {recorded} recorded steps match"
    )


def _name(state: RunState, n: int) -> str:
    step = state.steps.get(n)
    return step.name if step is not None else "?"


class _Watch:
    """Wraps the workflow function to see how its replay ends: raising (which exception), or
    returning (at which line: a profile hook notes the function's last `return` event)."""

    def __init__(self, wf: WorkflowDef) -> None:
        self.raised: BaseException | None = None
        self.returned = False
        self.returned_at: str | None = None
        self._code = getattr(wf.fn, "__code__", None)
        self._line: int | None = None
        self._previous: Any = None
        fn = wf.fn

        async def watched(step: Any, **args: Any) -> Any:
            try:
                value = await fn(step, **args)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.raised = exc
                raise
            self.returned = True
            code = self._code
            if code is not None and self._line is not None:
                path = os.path.relpath(code.co_filename)
                path = code.co_filename if path.startswith("..") else path
                self.returned_at = f"{path}:{self._line} in {code.co_name}"
            return value

        self.workflow = copy.copy(wf)
        self.workflow.fn = watched

    @property
    def ended(self) -> bool:
        return self.raised is not None or self.returned

    def __enter__(self) -> _Watch:
        self._previous = sys.getprofile()
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._previous)

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "return" and frame.f_code is self._code:
            self._line = frame.f_lineno  # each suspension too: the last one is the return
        if self._previous is not None:
            self._previous(frame, event, arg)


def _describe(v: DeterminismViolation) -> str:
    where = f" at {v.where}" if v.where else ""
    return f"step {v.step}: journal holds {v.recorded}; code now calls {v.requested}{where}"


class _Timer:
    def cancel(self) -> None:
        pass


class _NoWriter:
    """Stands in for the journal writer: a check appends nothing."""

    def size(self) -> int:
        return 0

    def poll(self) -> list[Any]:
        return []

    def append_frames(self, payload: bytes, *, sync: bool = True) -> list[Any]:
        raise AssertionError("a check never writes: _DryHost.io never calls this")


class _DryHost:
    """A worker that never fires a timer and never executes or writes anything."""

    def __init__(self) -> None:
        self.clock = SystemClock()
        self.arm_ahead = 0.0  # timers never fire here anyway
        self.draining = True
        self.listening = True
        self.step_pool = None

    def alone(self, driver: Any) -> bool:
        return False

    def call_at(self, when: float, fn: Any) -> _Timer:
        return _Timer()

    async def io(self, fn: Any, *args: Any) -> Any:
        await asyncio.Future()  # never: a check writes nothing (the task is canceled)

    def commit(self, driver: Any, *, urgent: bool) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()  # never durable: nothing is written

    def track(self, task: Any) -> None:
        task.cancel()  # flushes and on_complete calls: nothing of that in a check

    def activity(self) -> None:
        pass

    def emit(self, *args: Any, **kwargs: Any) -> None:
        pass

    def driver_closed(self, driver: Any) -> None:
        pass

    def driver_failed(self, driver: Any, exc: BaseException) -> None:
        pass

    def check_child(self, *args: Any) -> None:
        pass
