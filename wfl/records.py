"""Every journal record kind, defined once. Records are plain dicts with a type tag "t".

Format version 1. A run's journal always begins with a "run" record. Times are float epoch
seconds. Step records carry the step number "n".

  run      id workflow flow flow_sha module args created_at version on_complete context parent
           format [key] [deadline] [chain_deadline] [schedule scheduled_at] [continued_from chain]
           -- deadline: epoch seconds the run must end by; chain_deadline: the part of it a
              continued run inherits (given at start or by a parent); chain: the first run
              of a continue-as-new chain
  sched    n kind name args run_at [unstable] [retry] [event timeout_at] [version] at
           -- the workflow called a step (kinds: query mutation action sleep event workflow
              now random uuid); written before the step is ever executed
  att      n attempt at [child]
           -- an attempt is starting; durable *before* an action runs (write-ahead)
  done     n attempt result at [event_id]
  fail     n attempt error_type message retry_at at [tb] [event_id]
           -- retry_at is None when the failure is final
  event    id name value at           -- delivered by send-event; consumed by one "event" step
  evfail   id name error at           -- sent with --error: the consuming step raises EventFailed
                                         (a kind of its own, so a reader that predates it skips
                                         it and keeps waiting rather than return None)
  cancel   at                         -- cancel requested; the run is canceled from here on
  end      kind(success|failed|canceled) [result] [error] [tb] [continued_as] at
  progress value after at             -- step.set_progress(); no step number: `after` is how
                                         many steps the workflow had called, so a replay
                                         can tell the calls already recorded
  ocs      attempt at                 -- on_complete is being called (its attempt-th call since the
                                        last "end"), durable before the call; older journals lack it
  oc       ok [error] [tb] at         -- on_complete returned (or raised) for the last "end"
  restart  from_step at               -- steps >= from_step and the last end are void
  child    n child_id kind [result] [error] [tb] at   -- a child run of step n finished

tb (optional, added in 0.2 without a format change: readers of format 1 ignore keys they do
not know) is a bounded traceback of user code, see tracebacks.py.
"""

from __future__ import annotations

from typing import Any

FORMAT = 1

Record = dict[str, Any]


def run(
    *,
    run_id: str,
    workflow: str,
    flow: str,
    flow_sha: str,
    args: dict[str, Any],
    module: str = "",
    created_at: float,
    version: int,
    on_complete: list[str] | None,
    context: Any,
    parent: list[Any] | None,
    **extra: Any,
) -> Record:
    """`extra`: the optional fields above; None values are left out (older readers and
    journals without them read the same)."""
    return {
        "t": "run",
        "format": FORMAT,
        "id": run_id,
        "workflow": workflow,
        "flow": flow,
        "flow_sha": flow_sha,
        "module": module,
        "args": args,
        "created_at": created_at,
        "version": version,
        "on_complete": on_complete,
        "context": context,
        "parent": parent,
        **_present(extra),
    }


def sched(
    n: int, kind: str, name: str, args: Any, run_at: float, at: float, **extra: Any
) -> Record:
    return {"t": "sched", "n": n, "kind": kind, "name": name, "args": args, "run_at": run_at,
            "at": at, **extra}  # fmt: skip


def att(n: int, attempt: int, at: float, **extra: Any) -> Record:
    return {"t": "att", "n": n, "attempt": attempt, "at": at, **extra}


def done(n: int, attempt: int, result: Any, at: float, **extra: Any) -> Record:
    return {"t": "done", "n": n, "attempt": attempt, "result": result, "at": at, **extra}


def fail(
    n: int, attempt: int, error_type: str, message: str, retry_at: float | None, at: float,
    **extra: Any,
) -> Record:  # fmt: skip
    return {"t": "fail", "n": n, "attempt": attempt, "error_type": error_type,
            "message": message, "retry_at": retry_at, "at": at, **_present(extra)}  # fmt: skip


def event(event_id: str, name: str, value: Any, at: float) -> Record:
    return {"t": "event", "id": event_id, "name": name, "value": value, "at": at}


def event_error(event_id: str, name: str, error: str, at: float) -> Record:
    return {"t": "evfail", "id": event_id, "name": name, "error": error, "at": at}


def cancel(at: float) -> Record:
    return {"t": "cancel", "at": at}


def end(
    kind: str,
    at: float,
    *,
    result: Any = None,
    error: str | None = None,
    tb: Any = None,
    continued_as: str | None = None,
) -> Record:
    return {"t": "end", "kind": kind, "result": result, "error": error, "at": at,
            **_present({"tb": tb, "continued_as": continued_as})}  # fmt: skip


def progress(value: Any, after: int, at: float) -> Record:
    return {"t": "progress", "value": value, "after": after, "at": at}


def on_complete_started(attempt: int, at: float) -> Record:
    return {"t": "ocs", "attempt": attempt, "at": at}


def on_complete_done(at: float, error: str | None = None, tb: Any = None) -> Record:
    return {"t": "oc", "ok": error is None, "error": error, "at": at, **_present({"tb": tb})}


def restart(from_step: int, at: float) -> Record:
    return {"t": "restart", "from_step": from_step, "at": at}


def child(n: int, child_id: str, kind: str, at: float, *, result: Any = None,
          error: str | None = None, tb: Any = None) -> Record:  # fmt: skip
    return {"t": "child", "n": n, "child_id": child_id, "kind": kind, "result": result,
            "error": error, "at": at, **_present({"tb": tb})}  # fmt: skip


def _present(extra: dict[str, Any]) -> dict[str, Any]:
    """Optional keys are written only when set: records without them stay as format 1 had
    them, byte for byte."""
    return {k: v for k, v in extra.items() if v is not None}
