"""A run's state, derived by folding its journal records. No I/O; used by every reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .clock import iso
from .records import Record

# kinds whose steps are executed by the worker (others are timers, events or children)
EXECUTED_KINDS = ("query", "mutation", "action")


def due_now_or(wake: float, seen: float, now: float) -> float:
    """A wake time the journal has already reached (a record was written at or after it) is
    due now, whatever the clock says: after the clock stepped back (NTP, a VM restore) a run
    due now must not wait for the clock to catch up with its records."""
    return min(wake, now) if wake <= seen else wake


@dataclass
class StepState:
    n: int
    kind: str
    name: str
    args: Any
    run_at: float
    sched: Record
    attempts: int = 0
    running: bool = False  # an attempt started and has not ended
    started_at: float | None = None
    finished_at: float | None = None
    outcome: str | None = None  # "done" | "failed"
    result: Any = None
    error_type: str | None = None
    message: str | None = None
    retry_at: float | None = None  # next attempt's wake time after a retryable failure
    event_id: str | None = None
    child_id: str | None = None
    canceled: bool = False
    tb: dict[str, Any] | None = None  # traceback of the failure in `error` (tracebacks.py)

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    @property
    def error(self) -> str | None:
        return f"{self.error_type}: {self.message}" if self.error_type else None

    @property
    def display_state(self) -> str:
        if self.outcome == "done":
            return "done"
        if self.outcome == "failed":
            return "failed"
        if self.canceled:
            return "canceled"
        return "running" if self.running else "scheduled"

    @property
    def wake_at(self) -> float | None:
        """When this unfinished step next needs the worker (None: only an event can wake it)."""
        if self.finished:
            return None
        if self.retry_at is not None:
            return self.retry_at
        if self.kind == "event":
            timeout_at = self.sched.get("timeout_at")
            return float(timeout_at) if timeout_at is not None else None
        if self.kind == "workflow" and self.attempts:
            return None  # the child's end wakes it
        return self.run_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.n,
            "name": self.name,
            "kind": self.kind,
            "state": self.display_state,
            "attempts": self.attempts,
            "run_at": iso(self.run_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "error": self.error,
            "traceback": _text(self.tb) if self.error else None,
        }


@dataclass
class RunState:
    id: str = ""
    workflow: str = ""
    flow: str = ""
    flow_sha: str = ""
    module: str = ""  # the flow's module as SPEC §1 imports it ("" in journals before 0.2)
    args: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    version: int = 0
    on_complete: list[str] | None = None
    context: Any = None
    parent: list[Any] | None = None
    steps: dict[int, StepState] = field(default_factory=dict)
    events: list[Record] = field(default_factory=list)
    cancel_requested: bool = False
    end: Record | None = None
    on_complete_ran: bool = False
    on_complete_calls: int = 0  # calls started since the last end ("ocs" records)
    on_complete_error: str | None = None
    on_complete_tb: dict[str, Any] | None = None
    children_done: dict[int, Record] = field(default_factory=dict)
    restarts: int = 0
    # outcomes of steps that finished after a cancel, by step: kept for a restart
    dropped: dict[int, Record] = field(default_factory=dict)
    spent_events: set[str] = field(default_factory=set)  # consumed by steps a restart voided
    key: str | None = None
    deadline: float | None = None
    chain_deadline: float | None = None
    schedule: str | None = None
    scheduled_at: float | None = None
    continued_from: str | None = None
    chain: str | None = None  # the first run of its continue-as-new chain (None: this one)
    progress: Any = None
    # progress records per `after` (steps called before them): replay skips that many calls
    progress_marks: dict[int, int] = field(default_factory=dict)
    # unfinished steps, kept up to date so a worker's checks cost O(open), not O(history)
    open: dict[int, StepState] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: list[Record]) -> RunState:
        state = cls()
        for record in records:
            state.apply(record)
        return state

    def apply(self, r: Record) -> None:
        t = r["t"]
        at = r.get("at")
        if at is not None:
            self.updated_at = max(self.updated_at, float(at))
        if t == "run":
            self.id = r["id"]
            self.workflow = r["workflow"]
            self.flow = r["flow"]
            self.flow_sha = r.get("flow_sha", "")
            self.module = r.get("module", "")
            self.args = r["args"]
            self.created_at = self.updated_at = float(r["created_at"])
            self.version = int(r.get("version", 0))
            self.on_complete = r.get("on_complete")
            self.context = r.get("context")
            self.parent = r.get("parent")
            self.key = r.get("key")
            self.deadline = r.get("deadline")
            self.chain_deadline = r.get("chain_deadline")
            self.schedule = r.get("schedule")
            self.scheduled_at = r.get("scheduled_at")
            self.continued_from = r.get("continued_from")
            self.chain = r.get("chain")
        elif t == "sched":
            n = r["n"]
            self.steps[n] = self.open[n] = StepState(
                n, r["kind"], r["name"], r.get("args"), float(r["run_at"]), r
            )
        elif t == "att":
            s = self.steps[r["n"]]
            s.attempts = r["attempt"]
            s.running = True
            s.retry_at = None
            s.started_at = float(r["at"])
            if "child" in r:
                s.child_id = r["child"]
        elif t in ("done", "fail") and (self.cancel_requested or self.end is not None):
            # an in-flight step finished after the cancel or the deadline: the run drops its
            # outcome, but a restart that keeps the step applies it (the step did run)
            self.dropped[r["n"]] = r
        elif t == "done":
            s = self.steps[r["n"]]
            s.running = False
            s.outcome = "done"
            s.result = r["result"]
            s.error_type = s.message = s.tb = None  # earlier attempts' errors are history now
            s.finished_at = float(r["at"])
            s.retry_at = None
            s.event_id = r.get("event_id")
            self.open.pop(s.n, None)
            if s.attempts == 0:
                s.attempts = max(1, int(r.get("attempt", 1)))
                s.started_at = s.started_at or s.finished_at
        elif t == "fail":
            s = self.steps[r["n"]]
            s.running = False
            s.attempts = max(s.attempts, int(r.get("attempt", 1)))
            s.error_type = r["error_type"]
            s.message = r["message"]
            s.tb = r.get("tb")
            s.retry_at = r.get("retry_at")
            if r.get("event_id") is not None:  # an event sent with an error was consumed
                s.event_id = r["event_id"]
            if s.retry_at is None:
                s.outcome = "failed"
                s.finished_at = float(r["at"])
                self.open.pop(s.n, None)
        elif t in ("event", "evfail"):  # evfail: sent with --error, raised by await_event
            self.events.append(r)
        elif t == "cancel":
            self.cancel_requested = True
        elif t == "end":
            self.end = r
            self.on_complete_ran = False
            self.on_complete_calls = 0
            self.on_complete_error = self.on_complete_tb = None
            if r["kind"] in ("canceled", "failed"):  # what was left open never ends
                for s in self.steps.values():
                    if not s.finished:
                        s.canceled = True
        elif t == "ocs":
            self.on_complete_calls = int(r.get("attempt", self.on_complete_calls + 1))
        elif t == "oc":
            self.on_complete_ran = True
            self.on_complete_error = r.get("error")
            self.on_complete_tb = r.get("tb")
        elif t == "restart":
            cut = int(r["from_step"])
            # events consumed by the steps thrown away stay consumed: the steps that run anew
            # wait for new ones
            self.spent_events |= {
                s.event_id for n, s in self.steps.items() if n >= cut and s.event_id is not None
            }
            if self.deadline is not None:  # a restart gives the run its time again
                self.deadline = float(r["at"]) + (self.deadline - self.created_at)
            self.steps = {n: s for n, s in self.steps.items() if n < cut}
            self.open = {n: s for n, s in self.steps.items() if not s.finished}
            for s in self.steps.values():
                s.canceled = False  # unfinished steps before the cut run again
            self.children_done = {n: c for n, c in self.children_done.items() if n < cut}
            self.progress_marks = {a: k for a, k in self.progress_marks.items() if a < cut}
            self.end = None
            self.cancel_requested = False
            self.on_complete_ran = False
            self.restarts += 1
            dropped, self.dropped = self.dropped, {}
            for n, d in sorted(dropped.items()):
                if n in self.steps:
                    self.apply(d)
        elif t == "child":
            self.children_done[r["n"]] = r
        elif t == "progress":
            self.progress = r.get("value")
            after = int(r.get("after", 0))
            self.progress_marks[after] = self.progress_marks.get(after, 0) + 1
        # unknown record kinds from a newer wfl are skipped: readers stay forward-compatible

    # -- derived views ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.end is not None:
            return str(self.end["kind"]).replace("success", "completed")
        if self.cancel_requested:
            return "canceled"
        return "in_progress"

    @property
    def finished(self) -> bool:
        return self.state != "in_progress"

    @property
    def result(self) -> Any:
        if self.end is not None and self.end["kind"] == "success":
            return self.end.get("result")
        return None

    @property
    def error(self) -> str | None:
        return self.end.get("error") if self.end is not None else None

    @property
    def tb(self) -> dict[str, Any] | None:
        """The recorded traceback of the run's final error (tracebacks.py)."""
        return self.end.get("tb") if self.end is not None else None

    @property
    def continued_as(self) -> str | None:
        """The run this one continued as (continue-as-new), once it ended so."""
        return self.end.get("continued_as") if self.end is not None else None

    def consumed_events(self) -> set[str]:
        consumed = {s.event_id for s in self.steps.values() if s.event_id is not None}
        return consumed | self.spent_events

    def pending_event(self, name: str) -> Record | None:
        """The oldest delivered, unconsumed event called `name`."""
        consumed = self.consumed_events()
        for e in self.events:
            if e["name"] == name and e["id"] not in consumed:
                return e
        return None

    def next_wake_at(self) -> float | None:
        """When a worker next has something to do for this run; None: nothing until an
        event arrives (or never, once finished and on_complete ran)."""
        if self.end is not None:
            # a run that continued as new hands on_complete and its parent to the next run
            pending = (self.on_complete or self.parent) and not self.on_complete_ran
            return self.updated_at if pending and not self.continued_as else None
        if self.cancel_requested:
            return self.updated_at  # a worker must finish the cancellation
        if not self.open:
            return self.updated_at  # the workflow code runs next
        wakes: list[float] = [] if self.deadline is None else [self.deadline]
        for s in self.open.values():
            if s.kind == "event" and self.pending_event(str(s.sched.get("event"))):
                return self.updated_at
            if s.kind == "workflow" and s.n in self.children_done:
                return self.updated_at
            if s.running and s.kind in EXECUTED_KINDS:
                return self.updated_at  # an interrupted attempt must be resolved
            wake = s.wake_at
            if wake is not None:
                wakes.append(wake)
        return min(wakes) if wakes else None

    def wake_time(self, now: float) -> float | None:
        """next_wake_at() for a scheduler (see due_now_or)."""
        wake = self.next_wake_at()
        return None if wake is None else due_now_or(wake, self.updated_at, now)

    def current_step(self) -> StepState | None:
        return self.open[min(self.open)] if self.open else None

    def to_dict(self, *, steps: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "workflow": self.workflow,
            "flow": self.flow,
            "state": self.state,
            "args": self.args,
            "result": self.result,
            "error": self.error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "next_wake_at": iso(self.next_wake_at()) if not self.finished else None,
        }
        if self.parent:
            out["parent"] = self.parent[0]
        if steps:  # like steps, the traceback is left out of run lists (it can be 16 KiB)
            out["traceback"] = _text(self.tb) if self.error else None
        out.update(
            key=self.key,
            deadline=iso(self.deadline),
            progress=self.progress,
            schedule=self.schedule,
            scheduled_at=iso(self.scheduled_at),
            continued_from=self.continued_from,
            continued_as=self.continued_as,
        )
        if steps:
            out["steps"] = [s.to_dict() for _, s in sorted(self.steps.items())]
        return out


def _text(tb: dict[str, Any] | None) -> str | None:
    from .tracebacks import format_tb, is_traceback

    return format_tb(tb) if is_traceback(tb) and tb is not None else None
