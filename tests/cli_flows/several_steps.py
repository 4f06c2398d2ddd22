"""Five quick steps: a journal with several records, for the corruption test."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def step_value(i: int) -> str:
    return f"value {i} " + "-" * 40


@workflow.define
async def several(step: Step) -> int:
    for i in range(5):
        await step.run_query(step_value, {"i": i}, name=f"s{i}")
    return 5
