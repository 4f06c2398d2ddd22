"""An approval flow: wait for a human's decision as an event, with a timeout.

RUN=$(wfl start sample_flows/approval.py --arg doc=contract.pdf)
wfl send-event $RUN approved --value true
"""

from wfl import EventTimeout, Step, WorkflowManager

workflow = WorkflowManager()


def request_review(doc: str) -> str:
    return f"review of {doc} requested"


def publish(doc: str) -> str:
    return f"{doc} published"


@workflow.define(returns=str)
async def approval(step: Step, doc: str, hours: float = 48) -> str:
    await step.run_mutation(request_review, {"doc": doc})
    try:
        approved = await step.await_event("approved", timeout=hours * 3600)
    except EventTimeout:
        return f"{doc}: nobody answered within {hours:g} h"
    if not approved:
        return f"{doc}: rejected"
    return await step.run_action(publish, {"doc": doc})
