"""A step returning more than result_limit bytes (the limit is tiny here)."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager(result_limit=200)


def blob() -> str:
    return "x" * 1000


@workflow.define
async def too_big(step: Step) -> str:
    return await step.run_query(blob, name="blob")
