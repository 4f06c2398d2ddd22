"""A step that runs until the test lets it go: it reads a FIFO the test writes to."""

from pathlib import Path

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def hold(fifo: str) -> str:
    return Path(fifo).read_text().strip()  # blocks until the test writes and closes


@workflow.define
async def held(step: Step, fifo: str) -> str:
    return await step.run_action(hold, {"fifo": fifo})
