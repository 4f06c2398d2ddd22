"""Workflows for tests/test_testing_advance.py (timers that fire one after another)."""

from __future__ import annotations

from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def mark(i: int) -> int:
    return i


@workflow.define
async def three_sleeps(step: Step) -> list[int]:
    """Three one-minute sleeps, each followed by a step: a month-long flow in miniature."""
    done = []
    for i in range(3):
        await step.sleep(60)
        done.append(await step.run_query(mark, {"i": i}))
    return done
