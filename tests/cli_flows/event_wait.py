"""A workflow that waits for the event "approved" and returns its value."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def mark(value: object) -> object:
    return {"approved": value}


@workflow.define
async def approval(step: Step) -> object:
    value = await step.await_event("approved")
    return await step.run_query(mark, {"value": value})
