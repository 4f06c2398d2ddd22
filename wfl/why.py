"""`wfl status RUN --why`: one sentence on what a run is waiting for."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from . import codestate, importer
from .clock import iso
from .state import EXECUTED_KINDS, RunState, StepState

if TYPE_CHECKING:
    from .stores.base import Notes


def explain(state: RunState, now: float, *, leased: bool, workers_alive: bool) -> str:
    if state.end is not None:
        return _finished(state)
    if state.cancel_requested:
        return "it is canceled; a worker still has to record the end and call on_complete"
    if state.deadline is not None and state.deadline <= now:
        return _worker_needed(
            workers_alive and not leased,
            f"its deadline passed at {iso(state.deadline)}: it is to end failed",
        )
    sentence = _waiting(state, now, leased=leased, workers_alive=workers_alive)
    if state.deadline is not None:
        sentence += f"; its deadline is {iso(state.deadline)} ({_in(state.deadline, now)})"
    return sentence


def _waiting(state: RunState, now: float, *, leased: bool, workers_alive: bool) -> str:
    open_steps = sorted((s for s in state.steps.values() if not s.finished), key=lambda s: s.n)
    if not open_steps:
        if leased:
            return "nothing: a worker is running its workflow code right now"
        return _worker_needed(workers_alive, "its workflow code is ready to run")
    reasons = [_step_reason(s, state, now, leased, workers_alive) for s in open_steps]
    return reasons[0] if len(reasons) == 1 else "; ".join(reasons[:3])


def waits_for(state: RunState) -> str:
    """A few words on what an unfinished run waits for (the worker's live table)."""
    if state.end is not None:
        return "its end to be wound up"  # on_complete or the parent still to be told
    if state.cancel_requested:
        return "its cancellation"
    open_steps = sorted((s for s in state.steps.values() if not s.finished), key=lambda s: s.n)
    if not open_steps:
        return "its workflow code to run"
    s = open_steps[0]
    label = f"step {s.n} {s.name}"
    if s.kind == "event":
        return f"event {s.sched.get('event')!r}" + (
            " (or timeout)" if s.sched.get("timeout_at") else ""
        )
    if s.kind == "workflow" and s.child_id:
        return f"child run {s.child_id}"
    if s.running and s.kind in EXECUTED_KINDS:
        return f"{label}, cut off mid-attempt"
    if s.retry_at is not None:
        return f"backoff: {label} retries (attempt {s.attempts + 1} of {_max_attempts(s)})"
    return f"timer: {label}"


def _finished(state: RunState) -> str:
    end = state.end or {}
    when = iso(end.get("at"))
    kind = end.get("kind")
    if kind == "success" and end.get("continued_as"):
        return f"nothing: it completed at {when} and continued as run {end['continued_as']}"
    if kind == "success":
        return f"nothing: it completed at {when}"
    if kind == "canceled":
        return f"nothing: it was canceled at {when}"
    return f"nothing: it failed at {when} ({end.get('error')})"


def _step_reason(s: StepState, state: RunState, now: float, leased: bool, alive: bool) -> str:
    label = f"step {s.n} ({s.name})"
    if s.kind == "event":
        name = s.sched.get("event")
        timeout_at = s.sched.get("timeout_at")
        if state.pending_event(str(name)) is not None:
            return _worker_needed(alive and not leased, f"event {name!r} arrived for {label}")
        until = f", until {iso(timeout_at)} ({_in(timeout_at, now)})" if timeout_at else ""
        return f"an event: {label} waits for event {name!r}{until}"
    if s.kind == "workflow" and s.child_id:
        return f"a child run: {label} waits for run {s.child_id}"
    if s.running and s.kind in EXECUTED_KINDS:
        if leased:
            return f"{label} is running (attempt {s.attempts} of {_max_attempts(s)})"
        return _worker_needed(alive, f"{label} was cut off mid-attempt and must be resolved")
    if s.retry_at is not None and s.retry_at > now:
        return (
            f"a retry backoff: {label} failed attempt {s.attempts} of {_max_attempts(s)} "
            f"({s.error}); next attempt at {iso(s.retry_at)} ({_in(s.retry_at, now)})"
        )
    wake = s.wake_at
    if wake is not None and wake > now:
        return f"a timer: {label} is due at {iso(wake)} ({_in(wake, now)})"
    if leased:
        return f"a free slot: {label} is due and waits for a slot under max_parallelism"
    return _worker_needed(alive, f"{label} is due since {iso(wake)}")


def _worker_needed(alive: bool, what: str) -> str:
    if alive:
        return f"a worker: {what}; a worker is alive and should pick it up within a second"
    return f"a worker: {what}, but no worker is running (start one: wfl worker)"


def _max_attempts(s: StepState) -> int:
    retry = s.sched.get("retry")
    return int(retry["max_attempts"]) if retry else 1


def _in(when: float | None, now: float) -> str:
    if when is None:
        return "?"
    delta = when - now
    if delta <= 0:
        return "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"in {delta / size:.1f}{unit}"
    return f"in {delta:.1f}s"


def explain_code(notes: Notes | None, state: RunState, sentence: str) -> str:
    """What stands between an unfinished run and its code: a workflow that a worker could not
    load (or whose file is gone), or workers that keep older code than the files on disk.
    Reads only small files: no user code is imported here."""
    if state.end is not None or not state.id:
        return sentence
    module = f"module {state.module}, " if state.module else ""
    which = f"workflow {state.workflow!r} ({module}file {state.flow})"
    note = codestate.unloadable(notes, state.flow, state.workflow)
    if note is not None:
        sentence = (
            f"a worker that can load its code: the worker cannot load {which}: {note.get('reason')}"
        )
        try:
            edited = os.path.getmtime(state.flow) > float(note.get("at") or 0)
        except OSError:
            edited = False
        if edited:  # perhaps fixed: the note is only as new as the worker's last try
            sentence += f" (the file has changed since {iso(note.get('at'))}; a worker tries again)"
        return sentence
    if not os.path.exists(state.flow):
        where = f"where module {state.module} imports " if state.module else ""
        missing = (
            f"a worker cannot load {which} from its recorded path: the file is missing; "
            f"restore it, or run a worker {where}(wfl worker --app-dir DIR)"
        )
        if sentence.startswith("a worker:"):  # due now: this is what it waits for
            return f"a worker that can load its code: {missing}"
        return f"{sentence}; then a worker that can load its code: {missing}"
    root = importer.import_location(os.path.realpath(state.flow))[0] + os.sep
    for info in codestate.stale_workers(notes):
        changed = [f for f in info.get("changed", []) if str(f).startswith(root)]
        if changed:
            return (
                f"{sentence} (newer code waits: worker {info.get('pid')} runs the code it "
                f"loaded before {changed[0]} changed; restart it, or run wfl worker --reload)"
            )
    return sentence
