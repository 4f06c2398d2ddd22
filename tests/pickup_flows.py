"""Flows for tests/test_pickup.py: a run of one step that notes when its body runs.
Self-contained: real `wfl worker` processes load it too."""

from __future__ import annotations

import os

from wfl import Step, WorkflowManager

workflow = WorkflowManager()
events: list[str] = []  # the step bodies that ran in this process


def mark(log: str = "") -> str:
    events.append("body")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
    return "ran"


@workflow.define
async def first(step: Step, log: str = "") -> str:
    return await step.run_action(mark, {"log": log})
