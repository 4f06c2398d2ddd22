"""Steps whose results add up past journal_limit (the limit is tiny here)."""

from wfl import Step, WorkflowManager

workflow = WorkflowManager(journal_limit=4096, result_limit=2000)


def chunk(i: int) -> str:
    return str(i) * 1500


@workflow.define
async def hoarder(step: Step) -> int:
    for i in range(10):
        await step.run_query(chunk, {"i": i}, name=f"chunk{i}")
    return 10
