"""A workflow whose first step always raises: the run fails."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def explode() -> None:
    raise ValueError("boom from the flow")


def after() -> str:
    return "unreachable"


@workflow.define
async def doomed(step: Step) -> None:
    await step.run_query(explode, name="explode")
