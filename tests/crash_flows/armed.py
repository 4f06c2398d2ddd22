"""A timed action for the SIGKILL-while-armed test (test_timers.py): its body leaves a mark.

Loaded by real worker processes from this file's path; keep it self-contained."""

from __future__ import annotations

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def leave_mark(path: str) -> str:
    with open(path, "a") as f:
        f.write("ran\n")
    return "ran"


@workflow.define
async def armed(step: Step, path: str, delay: float) -> str:
    return await step.run_action(leave_mark, {"path": path}, run_after=delay)
