"""Workflows for the SPEC §8 tests (progress, deadlines, continue-as-new, keys, schedules).

Module-level, so workers load them from this file; `knobs` changes what the code does between
drives (a code change between deploys), `calls` counts step executions, `completions` holds
on_complete calls. tests/conftest.py resets them before each test.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from wfl import Step, WorkflowManager

workflow = WorkflowManager()
calls: Counter[str] = Counter()
knobs: dict[str, Any] = {}
completions: list[tuple[str, dict[str, Any], Any]] = []
gate = threading.Event()  # a blocking step waits on it
entered = threading.Event()  # set when the blocking step has started


def reset() -> None:
    calls.clear()
    knobs.clear()
    completions.clear()
    gate.clear()
    entered.clear()


def note(run_id: str, result: dict[str, Any], context: Any) -> None:
    completions.append((run_id, result, context))


def count(key: str) -> str:
    calls[key] += 1
    return key


def blocking(key: str) -> str:
    """Runs until the test opens the gate (a step in flight when something happens)."""
    calls[key] += 1
    entered.set()
    gate.wait(10)
    return key


def poll_source(cursor: int) -> int:
    """Stands in for an API polled every hour: returns how many new items it has."""
    calls["poll"] += 1
    return cursor % 3


# -- progress ---------------------------------------------------------------------------------


@workflow.define
async def batch(step: Step, total: int) -> int:
    for i in range(total):
        await step.run_query(count, {"key": f"item{i}"})
        if knobs.get("progress", True):
            await step.set_progress({"done": i + 1, "total": total})
        await step.sleep(60)
    return total


@workflow.define
async def big_progress(step: Step) -> str:
    await step.set_progress("x" * (65 * 1024))
    return "unreachable"


# -- deadlines --------------------------------------------------------------------------------


@workflow.define
async def slow(step: Step, hours: int = 2) -> str:
    await step.sleep(hours * 3600)
    return "woke"


@workflow.define(deadline=600)
async def quick_or_fail(step: Step) -> str:
    await step.sleep(3600)
    return "woke"


@workflow.define
async def stuck(step: Step) -> str:
    await step.run_action(blocking, {"key": "stuck"})
    return "finished"


@workflow.define
async def stuck_then_more(step: Step) -> list[str]:
    first = await step.run_action(blocking, {"key": "stuck"})
    return [first, await step.run_action(count, {"key": "after"})]


@workflow.define
async def parent_of_slow(step: Step) -> Any:
    return await step.run_workflow(slow, {"hours": 5})


# -- continue-as-new --------------------------------------------------------------------------

POLLS_PER_RUN = 24


@workflow.define
async def poller(step: Step, cursor: int = 0, seen: int = 0, until: int = 720) -> dict[str, int]:
    """Polls every hour; after a day of polls it continues as a new run, so no journal grows
    for ever; ends when `until` polls are done."""
    for _ in range(POLLS_PER_RUN):
        if cursor >= until:
            return {"polls": cursor, "seen": seen}
        seen += await step.run_action(poll_source, {"cursor": cursor})
        cursor += 1
        await step.set_progress({"cursor": cursor})
        await step.sleep(3600)
    return await step.continue_as_new({"cursor": cursor, "seen": seen, "until": until})


@workflow.define
async def bad_continue(step: Step) -> Any:
    return await step.continue_as_new({"when": threading.Lock()})


@workflow.define
async def parent_of_poller(step: Step) -> Any:
    return await step.run_workflow(poller, {"until": 30})


# -- keys and schedules -----------------------------------------------------------------------


@workflow.define
async def report(step: Step, kind: str = "nightly") -> str:
    await step.run_query(count, {"key": f"report-{kind}"})
    return f"{kind} report"


@workflow.define
async def long_report(step: Step) -> str:
    await step.sleep(3 * 86400)
    return "done"
