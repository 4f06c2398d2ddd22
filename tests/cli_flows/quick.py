"""One fast query: for tests that need many runs finished quickly."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def shout(text: str) -> str:
    return text.upper()


def notify(run_id: str, result: dict, context: object) -> None:
    """An on_complete handler."""


@workflow.define
async def quick(step: Step, text: str = "hi") -> str:
    return await step.run_query(shout, {"text": text})
