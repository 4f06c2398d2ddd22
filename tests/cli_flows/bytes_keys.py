"""A step result with bytes dict keys: valid msgpack, not valid JSON keys."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def lookup() -> dict:
    return {b"raw": 1, "text": {b"inner": b"v"}}


@workflow.define
async def bytes_keys(step: Step) -> dict:
    return await step.run_query(lookup, {})
