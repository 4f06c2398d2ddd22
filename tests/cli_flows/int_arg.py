"""A workflow with an int argument: `--arg n=5` is coerced to 5."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def double(n: int) -> int:
    return n * 2


@workflow.define(returns=int)
async def doubled(step: Step, n: int) -> int:
    return await step.run_query(double, {"n": n})
