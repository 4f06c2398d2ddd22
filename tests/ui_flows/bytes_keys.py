"""A run whose values hold what JSON cannot: bytes, and a dict keyed by bytes."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def raw() -> dict[bytes, bytes]:
    return {b"key": b"\x00value"}


@workflow.define
async def bytes_keys(step: Step) -> object:
    return await step.run_query(raw)
