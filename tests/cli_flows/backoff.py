"""An action that fails and is retried a minute later: a run waiting out a backoff."""

from wfl import RetryPolicy, Step, WorkflowManager

workflow = WorkflowManager()


def unreachable_service() -> None:
    raise ConnectionError("service unreachable")


@workflow.define
async def backing_off(step: Step) -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=60.0)
    await step.run_action(unreachable_service, retry=policy)
