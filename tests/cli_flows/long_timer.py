"""One query now, then an action an hour later: a run that waits on a timer."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def prepare() -> str:
    return "prepared"


def later(value: str) -> str:
    return value + " and done"


@workflow.define
async def patient(step: Step) -> str:
    value = await step.run_query(prepare)
    return await step.run_action(later, {"value": value}, run_after=3600, name="later")
