"""Flows for tests/test_group_commit.py (the worker's group commit and the rule for queries).

Step bodies look at what is durable when they run: `durable` maps a journal path to its bytes
as of its last sync (filled by the test's hook on journal.GroupWrite.finish), and each body
records which of its run's records were durable then. Also loaded by real `wfl worker`
processes (the SIGKILL test), so it stays self-contained.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from wfl import RetryPolicy, Step, WorkflowManager, current_step, journal

workflow = WorkflowManager(max_parallelism=4)
durable: dict[str, bytes] = {}  # journal path -> its bytes at its last sync
seen: list[tuple[str, int, int, list[tuple[str, int]]]] = []  # (kind, step, attempt, durable)
journal_dir: list[str] = []  # the directory of the runs (set by the test)


def _durable_records() -> list[tuple[str, int]]:
    ctx = current_step()
    data = durable.get(os.path.join(journal_dir[0], f"{ctx.run_id}.journal"), b"")
    if not data:
        return []
    recs = journal.parse(data, start=len(journal.MAGIC), path="durable").records
    return [(r["t"], r.get("n", -1)) for r in recs]


def act(i: int) -> int:
    ctx = current_step()
    seen.append(("action", ctx.step, ctx.attempt, _durable_records()))
    return i + 1


def ask(i: int) -> int:
    ctx = current_step()
    seen.append(("query", ctx.step, ctx.attempt, _durable_records()))
    return i * 2


async def ask_async(i: int) -> int:
    ctx = current_step()
    seen.append(("query", ctx.step, ctx.attempt, _durable_records()))
    return i * 2


@workflow.define
async def actions(step: Step, n: int = 3) -> int:
    total = 0
    for i in range(n):
        total += await step.run_action(act, {"i": i})
    return total


@workflow.define
async def queries_then_action(step: Step, n: int = 5, use_async: bool = False) -> int:
    total = 0
    for i in range(n):
        total += await step.run_query(ask_async if use_async else ask, {"i": i})
    return await step.run_action(act, {"i": total})


# -- for the SIGKILL test: real worker processes ------------------------------------------------


def _log(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def fresh(log: str, gate: str) -> str:
    """A query whose answer differs on every execution; waits at `gate` (a file) if it
    exists, so the test can kill the worker while a query runs."""
    ctx = current_step()
    value = uuid.uuid4().hex
    _log(log, f"query {ctx.step} {ctx.attempt} {value}\n")
    while os.path.exists(gate):
        time.sleep(0.005)
    return value


def use(log: str, gate: str, values: list[Any]) -> str:
    """The action that acts on the queries' answers: logs them, then waits at `gate`."""
    ctx = current_step()
    _log(log, f"action {ctx.step} {ctx.attempt} {','.join(values)}\n")
    while os.path.exists(gate):
        time.sleep(0.005)
    return "used"


@workflow.define
async def chain(step: Step, log: str, query_gate: str, action_gate: str) -> str:
    a = await step.run_query(fresh, {"log": log, "gate": ""})
    b = await step.run_query(fresh, {"log": log, "gate": query_gate})
    return await step.run_action(
        use, {"log": log, "gate": action_gate, "values": [a, b]}, retry=RetryPolicy(max_attempts=3)
    )


one_at_a_time = WorkflowManager(max_parallelism=1)


def note(run: str, i: int) -> int:
    order.append((run, i))
    return i


order: list[tuple[str, int]] = []  # (run label, step) in the order steps ran


@one_at_a_time.define
async def steps_in_turn(step: Step, label: str, n: int = 6) -> int:
    for i in range(n):
        await step.run_action(note, {"run": label, "i": i})
    return n


threads: list[tuple[int, str]] = []  # (i, thread name) of each `where` call


def where(i: int, sleep: float = 0.0, use_asyncio: bool = False) -> int:
    import asyncio
    import threading

    threads.append((i, threading.current_thread().name))
    if sleep:
        time.sleep(sleep)
    if use_asyncio:  # works inline too: the body sees no running loop

        async def inner() -> int:
            return i

        return asyncio.run(inner())
    return i


@workflow.define
async def many(step: Step, n: int, timeout: float = 0.0, slow_at: int = -1) -> int:
    for i in range(n):
        await step.run_action(
            where,
            {"i": i, "sleep": 0.005 if i == slow_at else 0.0, "use_asyncio": i == n - 1},
            timeout=timeout or None,
        )
    return n
