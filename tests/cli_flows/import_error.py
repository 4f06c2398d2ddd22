"""A flow importing a module that does not exist, on line 3."""

import no_such_module_for_wfl_tests  # noqa: F401

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


@workflow.define
async def flow(step: Step) -> None:
    return None
