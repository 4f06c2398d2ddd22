"""Workflows the benchmark drives on wfl (bench/wfl_side.py imports this module; the worker
finds the same module object, so the module-level lists below collect timings in-process).

The step functions mirror ../shared/bench/dbos_bench.py: a trivial step returns a small dict,
a stamp step returns time.time() so the caller can tell when its body ran.
"""

from __future__ import annotations

import time
from datetime import timedelta

from wfl import Step, WorkflowManager

# "8 at a time": max_parallelism=8 caps how many of this manager's steps execute at once in
# the worker, like DBOS's queue8 phase (a queue with worker_concurrency=8 fed 200 workflows).
workflow = WorkflowManager(max_parallelism=8)

# per-step wall times of the last `steps_timed` run (seconds), read by the bench in-process
STEP_TIMES: list[float] = []


def trivial_step(i: int) -> dict:
    return {"i": i, "ok": True, "s": "hello"}


async def trivial_step_async(i: int) -> dict:
    return {"i": i, "ok": True, "s": "hello"}


def stamp() -> float:
    return time.time()


@workflow.define
async def steps(step: Step, n: int) -> int:
    """n trivial (sync, like DBOS's) steps, one after another."""
    for i in range(n):
        await step.run_action(trivial_step, {"i": i})
    return n


@workflow.define
async def steps_async(step: Step, n: int) -> int:
    """The same with an `async def` step: no hop to the step thread pool."""
    for i in range(n):
        await step.run_action(trivial_step_async, {"i": i})
    return n


@workflow.define
async def steps_timed(step: Step, n: int) -> int:
    """n sequential steps; the wall time of each `await step.run_*` goes to STEP_TIMES."""
    STEP_TIMES.clear()
    for i in range(n):
        t0 = time.perf_counter()
        await step.run_action(trivial_step, {"i": i})
        STEP_TIMES.append(time.perf_counter() - t0)
    return n


@workflow.define
async def timer(step: Step, delay: float) -> list:
    """A step with run_after=delay; returns [time it was scheduled, time its body ran]."""
    before = time.time()  # not a step: fine for a benchmark (the run stays live, no replay)
    after = await step.run_action(stamp, run_after=delay)
    return [before, after]


@workflow.define
async def first_step(step: Step) -> float:
    """One step that returns when its body ran (pick-up latency)."""
    return await step.run_action(stamp)


@workflow.define
async def sleeper(step: Step, days: float = 30.0) -> str:
    """Sleeps `days` days, then one step."""
    await step.sleep(timedelta(days=days))
    return await step.run_action(stamp)


@workflow.define
async def timed_step(step: Step, delay: float) -> float:
    """One step with run_after=delay; returns when its body ran (bench/timers.py compares it
    with the run_at the journal recorded)."""
    return await step.run_action(stamp, run_after=delay)


@workflow.define
async def timed_sleep(step: Step, delay: float) -> float:
    """step.sleep(delay), then a step that returns when its body ran."""
    await step.sleep(delay)
    return await step.run_action(stamp)
