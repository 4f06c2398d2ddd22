"""Operations on runs shared by the Client, the CLI and the worker: start, cancel, events,
cleanup, restart, telling a parent that its child ended. Each is one locked journal update."""

from __future__ import annotations

import math
import os
import types
import unicodedata
from datetime import timedelta
from typing import Any

from . import journal, records
from .clock import Clock
from .errors import (
    InvalidArguments,
    JournalCorrupt,
    RefusedOperation,
    RunNotFound,
    SerializationError,
)
from .loader import file_sha, function_ref, load_workflow, module_name, split_target
from .manager import WorkflowDef, check_deadline
from .records import Record
from .state import RunState
from .stores.base import Store


def resolve_workflow(target: WorkflowDef | str) -> tuple[WorkflowDef, str]:
    """(workflow, absolute flow path) from a workflow object or "flow.py[:name]"."""
    if isinstance(target, WorkflowDef):
        return target, target.source_file
    if not isinstance(target, str):
        raise InvalidArguments(
            "start() takes a workflow (@workflow.define function) or 'flow.py:name'"
        )
    path, name = split_target(target)
    wf = load_workflow(path, name)
    return wf, os.path.abspath(path)


def create_run(
    store: Store,
    clock: Clock,
    target: WorkflowDef | str,
    args: dict[str, Any] | None,
    *,
    on_complete: Any = None,
    context: Any = None,
    parent: list[Any] | None = None,
    run_id: str | None = None,
    key: str | None = None,
    deadline: float | timedelta | None = None,
    chain_deadline: float | None = None,
    schedule: str | None = None,
    scheduled_at: float | None = None,
    continued_from: str | None = None,
    chain: str | None = None,
) -> str:
    """Record a new run. With `run_id` (child runs) creating it twice is harmless: the
    second call finds the first run and returns its id. With `key`, a run that holds the
    key is returned instead of creating one.

    `deadline`: seconds from now (else the workflow's own); `chain_deadline`: an absolute
    deadline inherited from a parent or the previous run of a chain; the sooner wins."""
    if key is not None:
        held = store.run_for_key(check_key(key))
        if held is not None:
            return held  # taken: nothing to load or validate, nothing is created
    own = check_deadline(deadline)
    wf, flow = resolve_workflow(target)
    coerced = validate_start_args(wf, args)
    _check_serializable(context, "context")
    on_complete_ref = _on_complete_ref(on_complete) if on_complete is not None else None
    if on_complete_ref is not None:
        from .loader import load_function

        load_function(*on_complete_ref)  # fail now, not when the run ends
    sha = file_sha(flow)
    now = clock.now()
    # one given at start replaces the workflow's own and binds a continue-as-new chain too;
    # an inherited one (parent, earlier run of the chain) can only make it sooner
    base = now + own if own is not None else None
    if base is not None:
        chain_deadline = min(base, chain_deadline or math.inf)
    elif wf.deadline is not None:
        base = now + wf.deadline
    limits = [d for d in (base, chain_deadline) if d is not None]

    def first_records(run_id: str) -> list[Record]:
        return [
            records.run(
                run_id=run_id,
                workflow=wf.name,
                flow=flow,
                flow_sha=sha,
                module=module_name(flow),
                args=coerced,
                created_at=now,
                version=wf.version,
                on_complete=on_complete_ref,
                context=context,
                parent=parent,
                key=key,
                deadline=min(limits) if limits else None,
                chain_deadline=chain_deadline,
                schedule=schedule,
                scheduled_at=scheduled_at,
                continued_from=continued_from,
                chain=chain,
            )
        ]

    created = store.create_run(first_records, run_id=run_id, key=key)
    store.notify(created)
    return created


def _on_complete_ref(fn: Any) -> list[str]:
    """on_complete is recorded as (file, name) and loaded by name in the worker, so only a
    module-level function (or "flow.py:function") can be found again."""
    if not isinstance(fn, str):
        if not isinstance(fn, types.FunctionType):
            raise InvalidArguments(
                f"on_complete must be a module-level function or 'flow.py:function', not "
                f"{_describe_callable(fn)}: a worker finds it again by file and name"
            )
        if fn.__qualname__ != fn.__name__ or fn.__name__ == "<lambda>":
            raise InvalidArguments(
                f"on_complete {fn.__qualname__} is not defined at the top level of its module: "
                "a worker finds it again by file and name, so define it with `def` at module level"
            )
    return function_ref(fn)


def _describe_callable(fn: Any) -> str:
    kind = type(fn)
    name = getattr(fn, "__qualname__", None) or getattr(getattr(fn, "func", None), "__name__", "")
    what = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    return f"a {what} ({name})" if name else f"a {what}"


def validate_start_args(wf: WorkflowDef, args: Any) -> dict[str, Any]:
    """Workflow arguments checked against the workflow and coerced, ready to record."""
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise InvalidArguments("workflow arguments must be a dict (a JSON object)")
    coerced = wf.validate_args(args)
    _check_serializable(coerced, "workflow arguments")
    return coerced


MAX_KEY = 200


def check_key(key: Any) -> str:
    """An idempotency key: 1-200 characters, none of them control characters."""
    if not isinstance(key, str):
        raise InvalidArguments(f"a key is a string, not {type(key).__name__}")
    if not 1 <= len(key) <= MAX_KEY:
        raise InvalidArguments(f"a key is 1 to {MAX_KEY} characters long, this one has {len(key)}")
    for i, ch in enumerate(key):
        if unicodedata.category(ch) == "Cc":
            raise InvalidArguments(
                f"a key may not contain control characters ({ch!r} at position {i})"
            )
    return key


def _check_serializable(value: Any, what: str) -> None:
    try:
        journal.encode(value)
    except SerializationError as exc:
        raise InvalidArguments(f"{what}: {exc}") from None


def read_state(store: Store, run_id: str) -> RunState:
    return RunState.from_records(store.read(run_id))


def _update(store: Store, run_id: str, decide: Any) -> list[Record]:
    return store.update(run_id, decide)


def cancel(store: Store, clock: Clock, run_id: str) -> None:
    def decide(existing: list[Record]) -> list[Record]:
        state = RunState.from_records(existing)
        if state.finished:
            raise RefusedOperation(f"run {run_id} is already {state.state}: nothing to cancel")
        return [records.cancel(clock.now())]

    _update(store, run_id, decide)
    store.notify(run_id)


def send_event(
    store: Store,
    clock: Clock,
    run_id: str,
    name: str,
    value: Any = None,
    *,
    error: str | None = None,
) -> str:
    """Deliver event `name` with `value`, or (with `error`) as a failure that makes the
    awaiting step.await_event raise EventFailed(error)."""
    if not isinstance(name, str) or not name:
        raise InvalidArguments("an event needs a non-empty name")
    if error is not None:
        if not isinstance(error, str) or not error.strip():
            raise InvalidArguments("an event's error needs a non-empty message")
        if value is not None:
            raise InvalidArguments("an event carries a value or an error, not both")
    _check_serializable(value, f"value of event {name!r}")
    event_id = os.urandom(8).hex()

    def decide(existing: list[Record]) -> list[Record]:
        state = RunState.from_records(existing)
        if state.finished:
            raise RefusedOperation(
                f"run {run_id} is {state.state}: it cannot receive event {name!r}"
            )
        if error is not None:
            return [records.event_error(event_id, name, error, clock.now())]
        return [records.event(event_id, name, value, clock.now())]

    _update(store, run_id, decide)
    store.notify(run_id)
    return event_id


def cleanup(store: Store, run_id: str, *, children: bool = True) -> list[str]:
    """Delete a finished run's journal (and its children's). Returns the ids deleted.
    A corrupt journal counts as a failed run: it can be deleted."""
    looked: list[RunState] = []

    def check(existing: list[Record]) -> None:
        # (under the journal's lock: a concurrent restart waits, then finds the run gone)
        state = RunState.from_records(existing)
        _refuse_unless_wound_up(run_id, state)
        if state.key is not None:
            store.free_key(state.key, run_id)  # first: a crash here leaves a run, not a stale key
        looked.append(state)

    try:
        store.delete(run_id, check=check)
    except JournalCorrupt:
        store.delete(run_id)
        return [run_id]
    state = looked[0]
    deleted = []
    if children:
        for s in state.steps.values():
            if s.child_id and store.exists(s.child_id):
                try:
                    deleted += cleanup(store, s.child_id)
                except (RefusedOperation, RunNotFound):
                    pass  # a child still running outlives its parent's cleanup
    deleted.append(run_id)
    return deleted


def _refuse_unless_wound_up(run_id: str, state: RunState) -> None:
    if not state.finished:
        raise RefusedOperation(
            f"run {run_id} is still in progress: cancel it first (wfl cancel {run_id})"
        )
    if state.end is None or state.next_wake_at() is not None:
        # canceled, but a worker has yet to record the end and call on_complete
        raise RefusedOperation(
            f"run {run_id} is canceled but not wound up yet (on_complete pending): "
            "let a worker finish it (wfl worker --once), then clean it up"
        )


def restart(store: Store, clock: Clock, run_id: str, from_step: int | str | None = None) -> int:
    """Re-run a finished run from a step (number or name). Returns the step number."""

    number = 0

    def decide(existing: list[Record]) -> list[Record]:
        nonlocal number
        state = RunState.from_records(existing)
        if not state.finished:
            raise RefusedOperation(f"run {run_id} is still in progress: only finished runs restart")
        number = _step_number(state, from_step)
        return [records.restart(number, clock.now())]

    _update(store, run_id, decide)
    store.notify(run_id)
    return number


def _step_number(state: RunState, from_step: int | str | None) -> int:
    if from_step is None:
        return 0
    if isinstance(from_step, int) or (isinstance(from_step, str) and from_step.isdigit()):
        n = int(from_step)
        if n < 0 or (n not in state.steps and n != len(state.steps)):
            raise InvalidArguments(f"run {state.id} has no step {n}")
        return n
    for n, s in sorted(state.steps.items()):
        if s.name == from_step:
            return n
    raise InvalidArguments(f"run {state.id} has no step named {from_step!r}")


def report_to_parent(store: Store, clock: Clock, child: RunState) -> None:
    """Append the child's outcome to its parent's journal, once."""
    if not child.parent or child.end is None:
        return
    parent_id, n = child.parent[0], int(child.parent[1])
    end = child.end

    def decide(existing: list[Record]) -> list[Record]:
        parent = RunState.from_records(existing)
        if parent.finished or n in parent.children_done:
            return []
        s = parent.steps.get(n)
        if s is None or s.child_id != (child.chain or child.id):  # a chain answers as its first
            return []
        return [
            records.child(
                n, child.id, end["kind"], clock.now(), result=end.get("result"),
                error=end.get("error"), tb=end.get("tb"),
            )
        ]  # fmt: skip

    try:
        if store.update(parent_id, decide):
            store.notify(parent_id)
    except RunNotFound:
        pass  # the parent was cleaned up
