"""Five steps of 3 KB each: every step needs a new page of disk (for the disk-full test)."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def wide(i: int) -> str:
    return f"{i}" * 3000


@workflow.define
async def wide_steps(step: Step) -> int:
    for i in range(5):
        await step.run_query(wide, {"i": i}, name=f"w{i}")
    return 5
