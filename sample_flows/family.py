"""A parent run with child runs: each child is a run of its own, linked to its parent."""

import asyncio

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def square(x: int) -> int:
    return x * x


@workflow.define(returns=int)
async def child(step: Step, x: int) -> int:
    return await step.run_query(square, {"x": x})


@workflow.define(returns=int)
async def parent(step: Step, n: int = 3) -> int:
    squares = await asyncio.gather(*(step.run_workflow(child, {"x": i}) for i in range(1, n + 1)))
    return sum(squares)
