"""A step that returns a value msgpack cannot store (a set)."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def make_set() -> set[int]:
    return {1, 2, 3}


@workflow.define
async def bad_value(step: Step) -> object:
    return await step.run_query(make_set, name="make_set")
