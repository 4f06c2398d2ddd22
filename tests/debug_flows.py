"""Workflows for the debugging tests (tracebacks, failed events, step defaults).

Lines the tests look for in recorded tracebacks carry a `# line:NAME` marker; `line_of(NAME)`
finds their number, so editing this file does not break the tests.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from wfl import EventFailed, NonRetryableError, RetryPolicy, Step, StepFailed, WorkflowManager

calls: Counter[str] = Counter()
workflow = WorkflowManager()
retrying = WorkflowManager(
    default_retry=RetryPolicy(max_attempts=3, initial_backoff=10.0, base=2.0),
    retry_actions_by_default=True,
)

SOURCE = Path(__file__).read_text().splitlines()


def line_of(marker: str) -> int:
    """The line number of the line marked `# line:<marker>`."""
    tag = f"# line:{marker}"
    return next(i for i, line in enumerate(SOURCE, 1) if line.rstrip().endswith(tag))


# -- steps that fail ----------------------------------------------------------------------------


def _lookup(order: str) -> None:
    # locals holding a secret: tracebacks never record locals
    auth = {"Authorization": f"Bearer {os.environ.get('WFL_TEST_SECRET', '')}"}
    if order not in auth:
        raise NonRetryableError(f"no such order {order}")  # line:lookup


def charge(order: str) -> None:
    calls["charge"] += 1
    _lookup(order)  # line:charge


def flaky_charge(order: str) -> str:
    calls["flaky"] += 1
    if calls["flaky"] < 3:
        raise ConnectionError(f"card service down (attempt {calls['flaky']})")  # line:flaky
    return f"charged {order}"


def down(order: str) -> None:
    calls["down"] += 1
    _connect(order)


def _connect(order: str) -> None:
    raise ConnectionError(f"card service down for {order}")  # line:connect


def peek(key: str) -> int:
    return calls[key]


def deep(depth: int) -> None:
    if depth <= 0:
        raise RecursionError("bottom reached")  # line:deep-bottom
    deep(depth - 1)  # line:deep


def wrapped() -> None:
    try:
        _lookup("inner")
    except NonRetryableError as exc:
        raise RuntimeError("payment step broke") from exc  # line:wrapped


# -- workflows ----------------------------------------------------------------------------------


@workflow.define
async def pay(step: Step, order: str) -> None:
    await step.run_action(charge, {"order": order})  # line:pay


@retrying.define
async def pay_flaky(step: Step, order: str) -> str:
    return await step.run_action(flaky_charge, {"order": order})  # line:pay-flaky


@retrying.define
async def pay_flaky_for_good(step: Step, order: str) -> str:
    return await step.run_action(down, {"order": order}, retry=RetryPolicy(max_attempts=2))


@workflow.define
async def raises_itself(step: Step) -> None:
    await step.run_query(peek, {"key": "x"}, name="look")
    _check_total(-1)  # line:raises-itself


def _check_total(total: int) -> None:
    if total < 0:
        raise ValueError(f"total is negative: {total}")  # line:check-total


@workflow.define
async def recursion(step: Step, depth: int) -> None:
    await step.run_query(deep, {"depth": depth})


@workflow.define
async def chained(step: Step) -> None:
    await step.run_query(wrapped)


@workflow.define
async def quick(step: Step) -> str:
    return "ok"


def failing_on_complete(run_id: str, result: dict[str, Any], context: Any) -> None:
    calls["on_complete"] += 1
    raise KeyError(f"no subscriber for {run_id}")  # line:on-complete


@workflow.define
async def recovers(step: Step, order: str) -> str:
    try:
        await step.run_action(charge, {"order": order})
    except StepFailed as exc:
        return f"recovered from {exc.error_type}"
    return "no failure"


# -- events -------------------------------------------------------------------------------------


@workflow.define
async def review(step: Step) -> str:
    try:
        value = await step.await_event("approved")
    except EventFailed as exc:
        return f"rejected: {exc}"
    return f"approved: {value}"


@workflow.define
async def review_uncaught(step: Step) -> Any:
    return await step.await_event("approved")  # line:review-uncaught


@workflow.define
async def typed_event(step: Step) -> Any:
    count = await step.await_event("count", type=int)
    await step.sleep(60)  # evicted and replayed: the recorded value is coerced again
    return [count, type(count).__name__]


@workflow.define
async def typed_when(step: Step) -> str:
    when = await step.await_event("when", type=datetime)
    await step.sleep(60)
    return f"{type(when).__name__} {when.isoformat()}"


@workflow.define
async def typed_event_caught(step: Step) -> str:
    try:
        await step.await_event("count", type=int)
    except StepFailed as exc:
        again = await step.await_event("count", type=int)  # the bad value was consumed
        return f"{exc.error_type}: {exc.message} | then {again}"
    return "no failure"


# -- step defaults ------------------------------------------------------------------------------


@workflow.define
async def with_defaults(step: Step, order: str) -> list[Any]:
    patient = step.with_options(retry=RetryPolicy(max_attempts=3, initial_backoff=1.0))
    first = await patient.run_action(flaky_charge, {"order": order})
    try:
        await patient.run_action(charge, {"order": order}, retry=False)  # the call wins
    except StepFailed as exc:
        return [first, exc.error_type]
    return [first, "no failure"]


@workflow.define
async def unstable_defaults(step: Step) -> str:
    loose = step.with_options(unstable_args=True)
    await loose.run_query(peek, {"key": f"nonce {calls['nonce']}"}, name="read")
    await step.sleep(60)
    return "done"


@workflow.define
async def parent_of_failure(step: Step) -> None:
    await step.run_workflow(pay, {"order": "child-1"})
