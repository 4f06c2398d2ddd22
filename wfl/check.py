"""`wfl check FLOW.py`: replay unfinished runs against the current code, executing nothing,
and report the first divergence of each (what the journal holds, what the code now calls)."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

from .clock import SystemClock
from .errors import DeterminismViolation, JournalCorrupt, RunNotFound, WflError
from .loader import load_workflow, module_name
from .replay import RunDriver
from .state import RunState
from .stores.base import Store

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
    driver = RunDriver(host, run_id, _NoWriter(), history, wf)  # type: ignore[arg-type]
    driver.start()
    last, stable = -1, 0
    while stable < STABLE_ROUNDS and driver.task is not None and not driver.task.done():
        await asyncio.sleep(0)
        if driver.violation is not None:
            break
        stable = stable + 1 if driver.next_n == last else 0
        last = driver.next_n
    if driver.task is not None and not driver.task.done():
        driver.task.cancel()
    recorded = len(state.steps)
    replayed = min(driver.next_n, recorded)
    violation = driver.violation
    if violation is None and driver.task is not None and driver.task.done():
        raised = driver.task.exception() if not driver.task.cancelled() else None
        if isinstance(raised, DeterminismViolation):
            violation = raised
    if violation is not None:
        return CheckResult(run_id, state.workflow, False, violation.step, _describe(violation))
    return CheckResult(
        run_id, state.workflow, True, replayed, f"ok: {replayed} of {recorded} recorded steps match"
    )


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
        self.draining = True
        self.listening = True
        self.step_pool = None

    def alone(self, driver: Any) -> bool:
        return False

    def call_at(self, when: float, fn: Any) -> _Timer:
        return _Timer()

    async def io(self, fn: Any, *args: Any) -> Any:
        await asyncio.Future()  # never: a check writes nothing (the task is canceled)

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
