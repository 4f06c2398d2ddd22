"""Versioning: version 2 added a fraud check; runs started under version 1 keep their path.

Convex Workflow issue #35 asks for exactly this: change code without breaking runs in flight.
"""

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def fraud_check(amount: int) -> bool:
    return amount < 10_000


def charge(amount: int) -> str:
    return f"charged {amount}"


@workflow.define(version=2, returns=str)
async def payment(step: Step, amount: int) -> str:
    if step.version() >= 2 and not await step.run_query(fraud_check, {"amount": amount}):
        return "refused by the fraud check"
    return await step.run_mutation(charge, {"amount": amount})
