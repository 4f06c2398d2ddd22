"""Workflows used by the engine tests. Module-level, so a worker loads them from this file.

Step functions count their executions in `calls` (a Counter keyed by a label), so tests can
tell whether a step ran again. `knobs` lets a test change what the workflow code does between
drives, standing in for a code change between deploys. conftest.py resets both before each
test.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from wfl import (
    Client,
    EventTimeout,
    NonRetryableError,
    RetryPolicy,
    Step,
    StepFailed,
    WorkflowManager,
    current_step,
)

calls: Counter[str] = Counter()
knobs: dict[str, Any] = {}
completions: list[tuple[str, dict[str, Any], Any]] = []  # on_complete calls
seen: list[Any] = []  # values observed by workflow code, on every (re)play
contexts: list[dict[str, Any]] = []  # wfl.current_step() as seen inside steps
concurrency = {"now": 0, "max": 0}
times: list[tuple[str, float]] = []  # (key, the test's clock) when a read_clock step ran


def reset() -> None:
    calls.clear()
    knobs.clear()
    completions.clear()
    seen.clear()
    contexts.clear()
    concurrency.clear()
    concurrency.update(now=0, max=0)
    times.clear()


workflow = WorkflowManager()  # Convex defaults; actions are not retried unless asked
eager = WorkflowManager(
    default_retry=RetryPolicy(max_attempts=4, initial_backoff=1.0, base=3.0),
    retry_actions_by_default=True,
)
serial = WorkflowManager(max_parallelism=1)
small = WorkflowManager(result_limit=200, journal_limit=4096)


# -- step functions ---------------------------------------------------------------------------


def count(key: str, value: Any = None) -> Any:
    """A sync step: counts its executions, returns `value` (or the key)."""
    calls[key] += 1
    return key if value is None else value


async def acount(key: str, value: Any = None) -> Any:
    calls[key] += 1
    await asyncio.sleep(0)
    return key if value is None else value


def flaky(key: str, failures: int) -> str:
    """Fails its first `failures` executions, then succeeds."""
    calls[key] += 1
    if calls[key] <= failures:
        raise ValueError(f"{key} failure {calls[key]}")
    return f"{key} ok after {calls[key]}"


def always_fails(key: str) -> None:
    calls[key] += 1
    raise RuntimeError(f"{key} is broken")


def fails_for_good(key: str) -> None:
    calls[key] += 1
    raise NonRetryableError(f"{key} gives up")


async def slow(key: str, seconds: float) -> str:
    calls[key] += 1
    await asyncio.sleep(seconds)
    return key


async def tracked(key: str) -> str:
    """Tracks how many of these run at the same moment, overall and per key prefix."""
    group = key.rstrip("0123456789")
    calls[key] += 1
    concurrency["now"] += 1
    concurrency["max"] = max(concurrency["max"], concurrency["now"])
    concurrency[group + ".now"] = concurrency.get(group + ".now", 0) + 1
    concurrency[group] = max(concurrency.get(group, 0), concurrency[group + ".now"])
    try:
        await asyncio.sleep(0.05)
    finally:
        concurrency["now"] -= 1
        concurrency[group + ".now"] -= 1
    return key


async def sibling(key: str, delay: float) -> str:
    await asyncio.sleep(delay)
    calls[key] += 1
    return key


def read_clock(key: str) -> str:
    """A step that notes when, on the test's clock (knobs["clock"]), its body ran."""
    times.append((key, knobs["clock"].now()))
    return key


def returns_set(key: str) -> Any:
    calls[key] += 1
    return {1, 2, 3}


def returns_big(key: str, size: int) -> str:
    calls[key] += 1
    return "x" * size


def remember_context(key: str) -> dict[str, Any]:
    ctx = current_step()
    info = {
        "run_id": ctx.run_id,
        "step": ctx.step,
        "attempt": ctx.attempt,
        "idempotency_key": ctx.idempotency_key,
    }
    contexts.append(info)
    calls[key] += 1
    return info


def cancel_own_run(key: str, dir: str) -> str:
    """An action that cancels the run it belongs to while it is executing."""
    calls[key] += 1
    Client(dir).cancel(current_step().run_id)
    return "dropped"


# -- on_complete handlers ---------------------------------------------------------------------


def record_completion(run_id: str, result: dict[str, Any], context: Any) -> None:
    completions.append((run_id, result, context))


def broken_completion(run_id: str, result: dict[str, Any], context: Any) -> None:
    completions.append((run_id, result, context))
    raise RuntimeError("on_complete blew up")


# -- workflows --------------------------------------------------------------------------------


@workflow.define
async def typed(step: Step, count: int, label: str = "none") -> dict[str, Any]:
    return {"count": count, "type": type(count).__name__, "label": label}


@workflow.define(returns=int)
async def wrong_return(step: Step) -> Any:
    return "not a number"


@workflow.define(returns=int)
async def coerced_return(step: Step) -> Any:
    return "7"


@workflow.define
async def one_action(step: Step, key: str = "a") -> Any:
    return await step.run_action(count, {"key": key})


@workflow.define
async def retried(step: Step, key: str, failures: int, max_attempts: int) -> str:
    policy = RetryPolicy(max_attempts=max_attempts, initial_backoff=2.0, base=3.0)
    return await step.run_action(flaky, {"key": key, "failures": failures}, retry=policy)


@workflow.define
async def retry_true(step: Step, key: str) -> None:
    await step.run_action(always_fails, {"key": key}, retry=True)


@workflow.define
async def unretried_kind(step: Step, kind: str, key: str) -> None:
    run = {"query": step.run_query, "mutation": step.run_mutation, "action": step.run_action}
    await run[kind](always_fails, {"key": key}, retry=RetryPolicy(max_attempts=5))


@workflow.define
async def action_default(step: Step, key: str) -> None:
    await step.run_action(always_fails, {"key": key})


@eager.define
async def eager_action(step: Step, key: str) -> None:
    await step.run_action(always_fails, {"key": key})


@workflow.define
async def non_retryable(step: Step, key: str) -> None:
    await step.run_action(fails_for_good, {"key": key}, retry=RetryPolicy(max_attempts=5))


@workflow.define
async def catches(step: Step, key: str) -> dict[str, Any]:
    try:
        await step.run_action(always_fails, {"key": key})
    except StepFailed as exc:
        after = await step.run_query(count, {"key": key + "-after"})
        return {
            "step": exc.step,
            "name": exc.name,
            "type": exc.error_type,
            "message": exc.message,
            "after": after,
        }
    return {}


@workflow.define
async def uncaught(step: Step, key: str) -> None:
    await step.run_query(always_fails, {"key": key})
    await step.run_query(count, {"key": key + "-never"})


@workflow.define
async def timed_out(step: Step, key: str, seconds: float, timeout: float) -> Any:
    try:
        return await step.run_action(slow, {"key": key, "seconds": seconds}, timeout=timeout)
    except StepFailed as exc:
        return {"type": exc.error_type, "message": exc.message}


@workflow.define
async def delayed(step: Step, mode: str, delay: float, base: float) -> str:
    from datetime import UTC, datetime, timedelta

    if mode == "run_after":
        opts: dict[str, Any] = {"run_after": delay}
    elif mode == "timedelta":
        opts = {"run_after": timedelta(seconds=delay)}
    elif mode == "datetime":
        opts = {"run_at": datetime.fromtimestamp(base + delay, UTC)}
    else:
        opts = {"run_at": base + delay}
    return await step.run_action(count, {"key": "delayed"}, **opts)


@workflow.define
async def parallel(step: Step) -> list[Any]:
    return list(
        await asyncio.gather(
            step.run_action(acount, {"key": "p0"}),
            step.run_action(acount, {"key": "p1"}, name="second"),
            step.run_action(acount, {"key": "p2"}),
        )
    )


@workflow.define
async def parallel_failure(step: Step) -> list[Any]:
    return list(
        await asyncio.gather(
            step.run_action(sibling, {"key": "slow-sibling", "delay": 0.05}),
            step.run_action(always_fails, {"key": "bad"}),
            step.run_action(sibling, {"key": "fast-sibling", "delay": 0.0}),
        )
    )


@workflow.define
async def fan_out(step: Step, width: int) -> list[Any]:
    calls_ = [step.run_action(tracked, {"key": f"t{i}"}) for i in range(width)]
    return list(await asyncio.gather(*calls_))


@serial.define
async def fan_out_serial(step: Step, width: int) -> list[Any]:
    calls_ = [step.run_action(tracked, {"key": f"t{i}"}) for i in range(width)]
    return list(await asyncio.gather(*calls_))


@workflow.define
async def three_steps(step: Step) -> list[Any]:
    """Three counted steps separated by durable sleeps, so it takes several drives."""
    a = await step.run_query(count, {"key": "s0"})
    await step.sleep(60)
    b = await step.run_mutation(count, {"key": "s2"})
    await step.sleep(60)
    c = await step.run_action(count, {"key": "s4"})
    return [a, b, c]


@workflow.define
async def restartable(step: Step) -> list[Any]:
    a = await step.run_action(count, {"key": "r0"})
    b = await step.run_action(count, {"key": "r1"}, name="middle")
    c = await step.run_action(count, {"key": "r2"})
    if knobs.get("fail_last"):
        raise RuntimeError("last part failed")
    return [a, b, c]


@workflow.define
async def changing(step: Step) -> Any:
    """Its first step's name/args follow `knobs`, standing in for edited code."""
    name = knobs.get("name", "first")
    args = {"key": "c0", "value": knobs.get("arg", 1)}
    unstable = bool(knobs.get("unstable"))
    a = await step.run_action(count, args, name=name, unstable_args=unstable)
    b = await step.await_event("go")
    out = [a, b]
    if knobs.get("extra"):
        out.append(await step.run_action(count, {"key": "extra"}))
    return out


@workflow.define
async def bad_args(step: Step) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        await step.run_action(count, {"key": "never", "value": {1, 2}})
    except StepFailed as exc:
        out["args"] = str(exc)
    try:
        await step.run_action(returns_set, {"key": "set"})
    except StepFailed as exc:
        out["result"] = str(exc)
    return out


@small.define
async def too_big_result(step: Step) -> str:
    try:
        await step.run_action(returns_big, {"key": "big", "size": 1000})
    except StepFailed as exc:
        return str(exc)
    return "no error"


@small.define
async def journal_hog(step: Step) -> str:
    for i in range(100):
        await step.run_action(returns_big, {"key": f"hog{i}", "size": 150})
    return "done"


@workflow.define
async def scheduled_later(step: Step) -> Any:
    return await step.run_action(count, {"key": "later"}, run_after=3600)


@workflow.define
async def cancels_itself(step: Step, dir: str) -> Any:
    value = await step.run_action(cancel_own_run, {"key": "inflight", "dir": dir})
    await step.run_action(count, {"key": "after-cancel"})
    return value


@workflow.define
async def waits(step: Step, name: str = "go") -> Any:
    return await step.await_event(name)


@workflow.define
async def waits_twice(step: Step) -> list[Any]:
    first = await step.await_event("tick")
    second = await step.await_event("tick")
    return [first, second]


@workflow.define
async def waits_with_timeout(step: Step, timeout: float) -> Any:
    try:
        return await step.await_event("go", timeout=timeout)
    except EventTimeout as exc:
        return {"timeout": str(exc), "type": type(exc).__name__}


@workflow.define
async def long_sleep(step: Step, days: float) -> str:
    await step.sleep(days * 86400)
    return "woke"


@workflow.define
async def deterministic_values(step: Step) -> list[Any]:
    values = [step.now().isoformat(), step.random(), step.uuid()]
    seen.append(values)
    await step.sleep(60)
    await step.await_event("go")
    return values


@workflow.define
async def child(step: Step, n: int, fail: bool = False) -> int:
    await step.run_action(count, {"key": f"child{n}"})
    if fail:
        raise ValueError(f"child {n} failed")
    return n * 10


@workflow.define
async def waiting_child(step: Step) -> Any:
    return await step.await_event("child-go")


@workflow.define
async def parent(step: Step, n: int, fail: bool = False) -> Any:
    try:
        return await step.run_workflow(child, {"n": n, "fail": fail})
    except StepFailed as exc:
        return {"caught": exc.error_type, "message": exc.message}


@workflow.define
async def parent_of_waiter(step: Step) -> Any:
    return await step.run_workflow(waiting_child, {})


@workflow.define(version=1)
async def versioned(step: Step) -> int:
    await step.await_event("go")
    return step.version()


@workflow.define
async def logs(step: Step) -> str:
    step.logger.info("starting the run")
    await step.sleep(60)
    step.logger.info("after the sleep")
    await step.sleep(60)
    step.logger.info("finishing")
    return "logged"


@workflow.define
async def introspect(step: Step) -> Any:
    info = await step.run_action(
        remember_context, {"key": "ctx"}, retry=RetryPolicy(max_attempts=2, initial_backoff=1)
    )
    return {"info": info, "run_id": step.run_id}


@workflow.define
async def echo(step: Step, value: Any = None) -> Any:
    return value


@workflow.define
async def tuple_args(step: Step) -> list[Any]:
    """Tuples become lists in the journal; replay must not call that a code change."""
    first = await step.run_query(count, {"key": "tuple", "value": (1, 2)})
    seen.append(first)
    await step.sleep(60)
    return [first, await step.run_query(count, {"key": "tuple2", "value": ("a", ("b",))})]


@workflow.define
async def timeout_then_sleep(step: Step) -> str:
    try:
        await step.await_event("go", timeout=60)
        outcome = "event"
    except EventTimeout:
        outcome = "timed out"
    await step.sleep(3600)
    return outcome


@workflow.define
async def swallows_violation(step: Step) -> str:
    name = knobs.get("name", "first")
    try:
        await step.run_action(count, {"key": "sv"}, name=name, run_after=60)
    except Exception:
        await step.run_action(count, {"key": "after-violation"})
        return "carried on"
    return "ok"


@workflow.define(max_parallelism=1)
async def fan_out_one(step: Step, width: int) -> list[Any]:
    calls_ = [step.run_action(tracked, {"key": f"one{i}"}) for i in range(width)]
    return list(await asyncio.gather(*calls_))


@workflow.define
async def delayed_kind(step: Step, kind: str, retry: bool = False) -> Any:
    run = {"query": step.run_query, "mutation": step.run_mutation, "action": step.run_action}
    return await run[kind](remember_context, {"key": kind}, run_after=60, retry=retry)


# -- SPEC §6 example --------------------------------------------------------------------------


def send_reminder(days: int) -> str:
    calls["reminder"] += 1
    return f"reminded after {days} days"


@workflow.define
async def reminder(step: Step, days: int) -> str:
    await step.sleep(days * 86400)
    await step.run_action(send_reminder, {"days": days})
    return "reminded"


def publish(doc: str) -> str:
    calls["publish"] += 1
    return f"published {doc}"


@workflow.define
async def approval(step: Step, doc: str) -> str:
    approved = await step.await_event("approved")
    if not approved:
        return "rejected"
    await step.sleep(1800)
    return await step.run_action(publish, {"doc": doc})


def peek_status(dir: str) -> dict[str, Any]:
    """What the journal says about this very step while it executes."""
    ctx = current_step()
    st = Client(dir).status(ctx.run_id).to_dict()["steps"][ctx.step]
    return {"state": st["state"], "attempts": st["attempts"], "started": st["started_at"]}


@workflow.define
async def peeks(step: Step, dir: str) -> Any:
    return await step.run_action(peek_status, {"dir": dir})


@workflow.define
async def parent_with_bad_child_args(step: Step) -> Any:
    try:
        return await step.run_workflow(child, {"n": "not a number"})
    except StepFailed as exc:
        return {"type": exc.error_type, "message": exc.message}


async def arecord_completion(run_id: str, result: dict[str, Any], context: Any) -> None:
    await asyncio.sleep(0)
    completions.append((run_id, result, context))


@serial.define
async def serial_failure(step: Step) -> list[Any]:
    return list(
        await asyncio.gather(
            step.run_action(always_fails, {"key": "serial-bad"}),
            step.run_action(sibling, {"key": "queued1", "delay": 0.0}),
            step.run_action(sibling, {"key": "queued2", "delay": 0.0}),
        )
    )


@eager.define
async def eager_opt_out(step: Step, key: str) -> None:
    await step.run_action(always_fails, {"key": key}, retry=False)


@workflow.define
async def timed_action(step: Step, delay: float) -> str:
    return await step.run_action(read_clock, {"key": "timed"}, run_after=delay)


@workflow.define
async def sleep_then_step(step: Step, delay: float) -> list[Any]:
    await step.sleep(delay)
    after = step.now().timestamp()
    return [after, await step.run_action(read_clock, {"key": "after"})]
