"""Flows for tests/test_processes.py: steps that say which process executed them, and runs
that start other runs (children, continue-as-new), which may fall in a sibling's share."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from wfl import Step, WorkflowManager

workflow = WorkflowManager(max_parallelism=16)


def pid(i: int) -> int:
    """The executing process: its pid (the step's result, so the journal says who ran it)."""
    return os.getpid()


@workflow.define
async def pids(step: Step, n: int = 3) -> list[int]:
    return [await step.run_action(pid, {"i": i}) for i in range(n)]


@workflow.define
async def family(step: Step, children: int = 4) -> list[Any]:
    """Starts `children` runs of `pids` and waits for them all."""
    return list(await asyncio.gather(*(step.run_workflow(pids, {"n": 2}) for _ in range(children))))


@workflow.define
async def chain(step: Step, left: int = 3) -> Any:
    """A continue-as-new chain of `left` + 1 runs, one step each."""
    await step.run_action(pid, {"i": left})
    if left == 0:
        return "end"
    return await step.continue_as_new({"left": left - 1})
