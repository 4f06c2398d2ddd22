"""A pipeline whose steps advance at a pace a person (and a browser test) can watch: an
extract, batches spaced by `pause` seconds (the second one fails once and is retried), a load."""

from wfl import RetryPolicy, Step, WorkflowManager, current_step

workflow = WorkflowManager(default_retry=RetryPolicy(max_attempts=3, initial_backoff=0.3))


def extract(source: str) -> dict[str, object]:
    return {"source": source, "rows": 1200}


def process_batch(i: int) -> int:
    if i == 1 and current_step().attempt == 1:
        raise ConnectionError("warehouse connection reset")
    return 100 + i


def load(total: int) -> str:
    return f"loaded {total} rows"


@workflow.define(returns=str)
async def pipeline(
    step: Step, source: str = "s3://acme/orders.csv", batches: int = 4, pause: float = 0.4
) -> str:
    await step.run_query(extract, {"source": source})
    total = 0
    for i in range(batches):
        total += await step.run_action(
            process_batch, {"i": i}, run_after=pause, retry=True, name=f"batch[{i}]"
        )
    return await step.run_mutation(load, {"total": total})
