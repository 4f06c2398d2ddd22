"""A workflow that logs with step.logger (and a step that logs with plain logging)."""

import logging

from wfl import Step, WorkflowManager

workflow = WorkflowManager()
log = logging.getLogger("shop.payments")


def charge(who: str) -> str:
    log.info("charging %s", who)
    return f"charged {who}"


@workflow.define
async def chatty(step: Step, who: str = "Ada", wait: bool = True) -> str:
    step.logger.info("hello %s", who)
    result = await step.run_action(charge, {"who": who})
    step.logger.debug("a detail")
    if wait:
        step.logger.info("waiting for go")
        await step.await_event("go")
    step.logger.warning("finishing for %s", who)
    return result
