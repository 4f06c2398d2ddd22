"""A payment that fails twice (retried at once), then for good: a run with two tracebacks."""

from wfl import RetryPolicy, Step, WorkflowManager

workflow = WorkflowManager()


def _card(order: str) -> None:
    raise ValueError(f"card declined for {order}")


def charge(order: str) -> None:
    _card(order)


@workflow.define
async def checkout(step: Step, order: str) -> None:
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.0)
    await step.run_action(charge, {"order": order}, retry=policy)
