"""Workflows for the engine's edge cases (tests/test_engine_edges.py). They count their
executions in `flows.calls`, which conftest.py resets before each test."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from flows import calls, count, workflow

from wfl import NonRetryableError, RetryPolicy, Step, current_step

# set by a test in the worker's own event loop: an async step waits for it
gates: dict[str, asyncio.Event] = {}


def raises_timeout(key: str) -> None:
    """A step whose own I/O timed out (socket, urllib, asyncio.wait_for raise this)."""
    calls[key] += 1
    raise TimeoutError("upstream did not answer")


async def gated(key: str) -> str:
    """Counts its start, waits for the test to open gates[key], counts its end."""
    calls[key + ".started"] += 1
    await gates[key].wait()
    calls[key + ".finished"] += 1
    return key


def gives_up(key: str) -> None:
    calls[key] += 1
    raise NonRetryableError(f"{key} gives up")


@workflow.define
async def own_timeout(step: Step, key: str, timeout: float = 0.0) -> Any:
    options: dict[str, Any] = {"timeout": timeout} if timeout else {}
    return await step.run_action(raises_timeout, {"key": key}, **options)


_ODD = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "huge": 1e12}


@workflow.define
async def odd_delay(step: Step, how: str, value: str) -> str:
    v = _ODD[value]
    if how == "sleep":
        await step.sleep(v)
    elif how == "run_after":
        await step.run_action(count, {"key": "odd"}, run_after=v)
    elif how == "run_at":
        await step.run_action(count, {"key": "odd"}, run_at=v)
    elif how == "timeout":
        await step.run_action(count, {"key": "odd"}, timeout=v)
    else:
        await step.await_event("go", timeout=v)
    return "done"


@workflow.define
async def sibling_outlives_failure(step: Step, key: str) -> None:
    """One step fails for good while its async sibling is still running."""
    await asyncio.gather(
        step.run_action(gated, {"key": key}),
        step.run_action(gives_up, {"key": key + ".fails"}),
    )


@workflow.define
async def action_then_more(step: Step, key: str) -> Any:
    first = await step.run_action(gated, {"key": key}, retry=RetryPolicy(max_attempts=3))
    return await step.run_action(count, {"key": key + ".after", "value": [first, "after"]})


@workflow.define
async def approval(step: Step, key: str) -> Any:
    await step.run_action(count, {"key": key + ".asked"})
    answer = await step.await_event("approved")
    await step.run_action(count, {"key": key + ".acted"})
    return answer


oc_keys: list[tuple[str, int]] = []


def keyed_completion(run_id: str, result: dict[str, Any], context: Any) -> None:
    ctx = current_step()
    oc_keys.append((ctx.idempotency_key, ctx.attempt))
