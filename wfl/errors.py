"""Every error wfl raises, in one hierarchy; each message says what went wrong and what to do."""

from __future__ import annotations

from typing import Any


class WflError(Exception):
    """Base of all errors wfl reports to users. `exit_code` is what the CLI exits with."""

    exit_code = 2


class RunNotFound(WflError):
    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run matches {run_id!r} (see `wfl status` for run ids)")


class RunNotStarted(RunNotFound):
    """A journal that holds no record: a start cut short (wfl/unborn.py). Its id is as
    unknown as one that never started."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.run_id = run_id


class AmbiguousRunId(WflError):
    def __init__(self, prefix: str, matches: list[str]) -> None:
        shown = ", ".join(sorted(matches)[:5])
        super().__init__(f"run id {prefix!r} is ambiguous: it matches {shown}; type more of it")


class InvalidRunId(WflError):
    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"invalid run id {run_id!r}: run ids are lowercase letters and digits only"
        )


class FlowLoadError(WflError):
    """The flow file is missing, does not import, or lacks the named workflow."""


class InvalidArguments(WflError):
    """Workflow arguments (or a CLI option) do not match what the workflow declares."""


class RefusedOperation(WflError):
    """Cancel of a finished run, cleanup of a running one, and the like."""


class SerializationError(WflError):
    """A value cannot be stored in a journal (only msgpack types can)."""


class JournalCorrupt(WflError):
    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        super().__init__(
            f"journal {path} is corrupt at byte {offset}: {reason}; "
            "the run cannot continue (inspect it with `wfl show`, or `wfl cleanup` it)"
        )


class JournalWriteError(WflError):
    """Appending to a journal failed (disk full, read-only directory...); nothing was lost."""


class JournalLimitExceeded(WflError):
    pass


class DeterminismViolation(WflError):
    """Replay found a step call that does not match the journal at the same step number."""

    def __init__(self, step: int, recorded: str, requested: str, where: str = "") -> None:
        self.step = step
        self.recorded = recorded
        self.requested = requested
        self.where = where
        at = f" (called at {where})" if where else ""
        super().__init__(
            f"determinism violation at step {step}: the journal holds {recorded} but the "
            f"workflow now calls {requested}{at}; check that the workflow is deterministic, "
            "or keep old runs on their old path with step.version()"
        )


class StepFailed(WflError):
    """Raised inside a workflow when a step failed for good; catch it to handle the failure.
    `traceback` is the failed attempt's recorded traceback (see wfl.tracebacks), if any."""

    def __init__(
        self,
        step: int,
        name: str,
        error_type: str,
        message: str,
        traceback: dict[str, Any] | None = None,
    ) -> None:
        self.step = step
        self.name = name
        self.error_type = error_type
        self.message = message
        self.traceback = traceback
        super().__init__(f"step {step} ({name}) failed: {error_type}: {message}")


class NonRetryableError(Exception):
    """Raise from a step to fail it at once, whatever its retry policy says."""


class EventFailed(WflError):
    """Raised by `step.await_event(name)` when the event was sent with an error
    (`wfl send-event RUN NAME --error MSG`); str() is that message."""

    def __init__(self, message: str, *, name: str = "") -> None:
        self.name = name
        self.message = message
        super().__init__(message)


class EventTimeout(WflError):
    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        super().__init__(f"no event {name!r} arrived within {timeout:g} s")


class WorkflowFailed(WflError):
    """The run failed; `traceback` is the recorded traceback of its error as Python would
    print it (None when nothing of the user's code raised)."""

    exit_code = 1

    def __init__(self, run_id: str, error: str, *, traceback: str | None = None) -> None:
        self.run_id = run_id
        self.error = error
        self.traceback = traceback
        super().__init__(f"run {run_id} failed: {error}")


class WorkflowCanceled(WflError):
    exit_code = 1

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} was canceled")


class WaitTimeout(WflError):
    def __init__(self, run_id: str, timeout: float) -> None:
        super().__init__(f"run {run_id} did not finish within {timeout:g} s")


class DeadlineExceeded(WflError):
    """A run was still going at its deadline (`deadline=` / `--deadline`)."""


class ScheduleNotFound(WflError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no schedule named {name!r} (see `wfl schedule list`)")


class ScheduleExists(WflError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"a schedule named {name!r} already exists: remove it first "
            f"(wfl schedule remove {name}) or pick another name"
        )


class StoreUnavailable(WflError):
    """The store cannot be reached (the database is down, the connection broke)."""


class StoreError(WflError):
    """The store refused an operation in a way wfl does not expect (a damaged schema,
    missing privileges...): one line naming the store and what it said."""


class StoreVersionError(WflError):
    """The store was laid out by a newer wfl than this one."""


class LeaseLost(WflError):
    """The store can no longer prove that this worker holds a run's lease: the worker drops
    the run (whatever it was about to record is recorded by the next holder, or redone)."""
