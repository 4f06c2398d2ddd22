"""A run whose last records are big: its return value, or what its on_complete raises."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()

BIG = 150_000  # bytes: more than the free space the disk-full test leaves


def echo(text: str) -> str:
    return text


def complains(run_id: str, result: dict, context: object) -> None:
    raise RuntimeError("x" * BIG)


@workflow.define
async def big_end(step: Step, big: bool = False) -> str:
    await step.run_query(echo, {"text": "hi"})
    return "y" * BIG if big else "small"
