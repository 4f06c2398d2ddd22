"""Flows for the crash and multi-worker tests (tests/test_crash.py, tests/test_multiworker.py).

Every step appends one line `run_id step attempt tag` to a side-effect log (O_APPEND, one
write, fsync) before it returns, so a test can compare what really executed with what the
journal says was attempted. on_complete appends `run_id kind` to its own log.

Loaded by real `wfl worker` processes from this file's path; keep it self-contained.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from wfl import NonRetryableError, RetryPolicy, Step, StepFailed, WorkflowManager, current_step

# Every step may be interrupted by a SIGKILL, and an interrupted action counts as a failed
# attempt: give actions room for many attempts, with short backoffs, so runs survive chaos.
PATIENT = RetryPolicy(max_attempts=40, initial_backoff=0.01, base=1.15)

workflow = WorkflowManager(default_retry=PATIENT, retry_actions_by_default=True, max_parallelism=8)
plain = WorkflowManager()  # Convex defaults: actions are not retried


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def record(log: str, tag: str = "-") -> None:
    """The side effect: one durable line saying this attempt of this step executed."""
    ctx = current_step()
    append_line(log, f"{ctx.run_id} {ctx.step} {ctx.attempt} {tag}\n")


def _pause(i: int, salt: int) -> float:
    return ((i * 7919 + salt * 104729) % 5) * 0.006  # 0..24 ms, fixed per step


# -- steps ------------------------------------------------------------------------------------


async def work(log: str, i: int) -> int:
    await asyncio.sleep(_pause(i, 1))
    record(log, f"work{i}")
    await asyncio.sleep(_pause(i, 2))  # a window between the side effect and its `done`
    return i * i


def work_sync(log: str, i: int) -> int:
    time.sleep(_pause(i, 3))
    record(log, f"sync{i}")
    time.sleep(_pause(i, 4))
    return i * i + 1


def flaky(log: str, i: int) -> int:
    """Fails its first attempt; succeeds from the second on."""
    record(log, f"flaky{i}")
    if current_step().attempt < 2:
        raise RuntimeError(f"flaky {i} failed on purpose")
    return 100 + i


def refuse(log: str) -> int:
    record(log, "refuse")
    raise NonRetryableError("refused on purpose")


def peek(log: str, key: str) -> int:  # a query
    record(log, f"peek-{key}")
    return len(key)


def bump(log: str, n: int) -> int:  # a mutation
    record(log, f"bump{n}")
    return n + 1


def blob(log: str, i: int, size: int) -> str:
    record(log, f"blob{i}")
    return f"{i}:" + "x" * size


def slow(log: str, seconds: float) -> str:
    record(log, "begin")
    time.sleep(seconds)
    record(log, "end")
    return "slow done"


def hold(log: str, gate: str) -> str:
    """Executes, then keeps its step slot while the file `gate` exists (a worker's backlog)."""
    record(log, "hold")
    while os.path.exists(gate):
        time.sleep(0.005)
    return "held"


def note(log: str, value: Any = None) -> Any:
    record(log, f"note={value}")
    return value


# -- on_complete ------------------------------------------------------------------------------


def finished(run_id: str, result: dict[str, Any], context: dict[str, Any]) -> None:
    append_line(context["oc_log"], f"{run_id} {result['kind']}\n")
    time.sleep(float(context.get("linger", 0.0)))  # a window between on_complete and `oc`


# -- workflows --------------------------------------------------------------------------------

FAN = 12


@workflow.define(returns=dict)
async def fault(step: Step, log: str) -> dict:
    """~30 actions: sequential ones, a fan-out, retried ones, a refused one, a query, a
    mutation and a durable sleep."""
    seq = []
    q = await step.run_query(peek, {"log": log, "key": "seed"})
    for i in range(6):
        fn = work if i % 2 == 0 else work_sync
        seq.append(await step.run_action(fn, {"log": log, "i": i}))
    fan = await asyncio.gather(
        *(
            step.run_action(work if i % 3 else work_sync, {"log": log, "i": i})
            for i in range(10, 10 + FAN)
        )
    )
    m = await step.run_mutation(bump, {"log": log, "n": q})
    retried = [await step.run_action(flaky, {"log": log, "i": i}) for i in range(3)]
    try:
        await step.run_action(refuse, {"log": log})
        caught = "no"
    except StepFailed as exc:
        caught = exc.error_type
    await step.sleep(0.05)
    tail = await asyncio.gather(
        *(step.run_action(work, {"log": log, "i": i}) for i in range(30, 34)),
        step.run_query(peek, {"log": log, "key": "tail"}),
    )
    for i in range(40, 44):
        seq.append(await step.run_action(work_sync, {"log": log, "i": i}))
    return {
        "q": q,
        "seq": seq,
        "fan": list(fan),
        "m": m,
        "retried": retried,
        "caught": caught,
        "tail": list(tail),
    }


def fault_expected() -> dict[str, Any]:
    seq = [i * i if i % 2 == 0 else i * i + 1 for i in range(6)]
    fan = [i * i if i % 3 else i * i + 1 for i in range(10, 10 + FAN)]
    seq += [i * i + 1 for i in range(40, 44)]
    return {
        "q": 4,
        "seq": seq,
        "fan": fan,
        "m": 5,
        "retried": [100, 101, 102],
        "caught": "NonRetryableError",
        "tail": [i * i for i in range(30, 34)] + [4],
    }


@workflow.define(returns=int)
async def burst(step: Step, log: str, width: int = 40, size: int = 12000) -> int:
    """Many parallel steps with large results: big, frequent journal appends."""
    parts = await asyncio.gather(
        *(step.run_action(blob, {"log": log, "i": i, "size": size}) for i in range(width))
    )
    return sum(len(p) for p in parts)


@workflow.define(returns=list)
async def five(step: Step, log: str, retry: bool = False) -> list:
    """Five actions: three in sequence, then two in parallel. Not retried unless `retry`."""
    opts: dict[str, Any] = {"retry": PATIENT if retry else False}
    out = [await step.run_action(work_sync, {"log": log, "i": i}, **opts) for i in range(3)]
    out += await asyncio.gather(
        step.run_action(work, {"log": log, "i": 3}, **opts),
        step.run_action(work, {"log": log, "i": 4}, **opts),
    )
    return out


FIVE_EXPECTED = [1, 2, 5, 9, 16]


@workflow.define(returns=list)
async def gate(step: Step, log: str) -> list:
    """Waits for events `a` and `b`, then records both values."""
    await step.run_action(note, {"log": log, "value": "ready"}, retry=False)
    a = await step.await_event("a")
    b = await step.await_event("b")
    await step.run_action(note, {"log": log, "value": f"{a}+{b}"}, retry=False)
    return [a, b]


@plain.define(returns=str)
async def lingering(step: Step, log: str, seconds: float = 0.5) -> str:
    """A slow action (no retries) and a quick one after it."""
    first = await step.run_action(slow, {"log": log, "seconds": seconds})
    await step.run_action(note, {"log": log, "value": "after"})
    return first


@plain.define(returns=int)
async def wide(step: Step, log: str, width: int = 20) -> int:
    """Parallel actions that are not retried: an interrupted one fails the run."""
    done = await asyncio.gather(
        *(step.run_action(note, {"log": log, "value": i}) for i in range(width))
    )
    return len(done)


@workflow.define(returns=str)
async def held(step: Step, log: str, gate: str) -> str:
    """One action that holds its slot while `gate` exists."""
    return str(await step.run_action(hold, {"log": log, "gate": gate}))


@workflow.define(returns=int)
async def tiny(step: Step, log: str) -> int:
    a = await step.run_action(work_sync, {"log": log, "i": 1})
    b = await step.run_action(work, {"log": log, "i": 2})
    return a + b
