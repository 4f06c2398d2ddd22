"""A flaky action retried with backoff: it fails twice, then succeeds on the third attempt."""

from wfl import NonRetryableError, RetryPolicy, Step, WorkflowManager, current_step

workflow = WorkflowManager(default_retry=RetryPolicy(max_attempts=5, initial_backoff=0.2))


def call_flaky_service(order: str) -> str:
    attempt = current_step().attempt  # the journal counts attempts across crashes too
    if order == "bogus":
        raise NonRetryableError("no such order: retrying will not help")
    if attempt < 3:
        raise ConnectionError(f"service unavailable (attempt {attempt})")
    return f"order {order} confirmed on attempt {attempt}"


@workflow.define(returns=str)
async def flaky(step: Step, order: str = "A-42") -> str:
    return await step.run_action(call_flaky_service, {"order": order}, retry=True)
