"""Two workflows in one file: the CLI must be told which one."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def echo(value: str) -> str:
    return value


@workflow.define
async def first(step: Step) -> str:
    return await step.run_query(echo, {"value": "first"})


@workflow.define
async def second(step: Step) -> str:
    return await step.run_query(echo, {"value": "second"})
