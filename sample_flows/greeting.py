"""The greeting flow from SPEC §1: a query, then an action two seconds later."""

from datetime import timedelta

from wfl import RetryPolicy, Step, WorkflowManager

workflow = WorkflowManager(
    default_retry=RetryPolicy(max_attempts=3, initial_backoff=0.1, base=2.0),
    retry_actions_by_default=False,
    max_parallelism=10,
)


def greeting_query(name: str) -> str:  # any module-level function is a step
    return f"The query says... Hi {name}!"


async def greeting_action(query_result: str) -> str:  # sync or async, both work
    return query_result + " The action says... Hi back!"


@workflow.define(returns=str)
async def greet(step: Step, name: str) -> str:
    q = await step.run_query(greeting_query, {"name": name})
    return await step.run_action(
        greeting_action, {"query_result": q}, run_after=timedelta(seconds=2), name="reply"
    )
