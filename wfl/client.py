"""Client: start, watch, cancel and clean up runs from Python (the CLI is built on it)."""

from __future__ import annotations

import builtins
import contextlib
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from . import ops
from .clock import Clock, SystemClock
from .errors import (
    JournalCorrupt,
    RefusedOperation,
    RunNotFound,
    WaitTimeout,
    WorkflowCanceled,
    WorkflowFailed,
)
from .loader import file_sha
from .manager import WorkflowDef
from .state import RunState
from .stores import open_store
from .stores.base import Store


class StepStatus:
    """One step of a run; attributes are the keys of its JSON form."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        return f"StepStatus({self._data!r})"


class RunStatus:
    """A run as SPEC §4 describes it; attributes are the JSON keys (`.state`, `.steps`...)."""

    def __init__(
        self, data: dict[str, Any], state: RunState | None = None, *, summary: Any = None
    ) -> None:
        self._data = data
        self.run_state = state  # the full derived state, for renderers and --why
        self.summary = summary  # the index's summary, when listed without steps

    def __getattr__(self, key: str) -> Any:
        if key == "steps":
            return [StepStatus(s) for s in self._data.get("steps", [])]
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    @property
    def finished(self) -> bool:
        return bool(self._data["state"] != "in_progress")

    @property
    def step_counts(self) -> tuple[int, int, str]:
        """(steps finished, steps recorded, current step label) for run tables."""
        if self.summary is not None:
            return self.summary.steps_done, self.summary.steps_total, self.summary.current
        rs = self.run_state
        if rs is None:
            return 0, 0, ""
        step = rs.current_step()
        current = (
            f"{step.n} {step.name} ({step.display_state})" if step and not self.finished else ""
        )
        return sum(1 for s in rs.steps.values() if s.finished), len(rs.steps), current

    @property
    def flow_changed(self) -> bool:
        """The flow file's content differs from when the run started."""
        recorded = self.run_state.flow_sha if self.run_state else ""
        return bool(recorded) and file_sha(self._data["flow"]) != recorded

    def __repr__(self) -> str:
        return f"RunStatus(id={self.id!r}, workflow={self.workflow!r}, state={self.state!r})"


def status_of(store: Store, run_id: str) -> RunStatus:
    try:
        state = ops.read_state(store, run_id)
    except JournalCorrupt as exc:
        return _broken_status(store, run_id, str(exc))
    return RunStatus(state.to_dict(), state)


def _broken_status(store: Store, run_id: str, error: str) -> RunStatus:
    from .index import RunSummary

    mtime = store.modified_at(run_id)
    return RunStatus({**RunSummary.corrupt(run_id, error, mtime).status, "steps": []}, None)


class Client:
    def __init__(
        self,
        dir: str | os.PathLike[str] | None = None,
        *,
        store: str | os.PathLike[str] | Store | None = None,
        clock: Clock | None = None,
    ) -> None:
        """`store`: a directory, `file:PATH`, a `postgresql://` URL or a Store; `dir` is a
        directory (or any store spec). Without either: $WFL_STORE, $WFL_DIR, ./.wfl."""
        self.store: Store = open_store(store, dir=dir)
        self.clock: Clock = clock or SystemClock()

    @property
    def dir(self) -> str:
        """The store as printed (a directory's absolute path; a URL without its password)."""
        return self.store.spec

    def start(
        self,
        workflow: WorkflowDef | str,
        args: dict[str, Any] | None = None,
        *,
        on_complete: Any = None,
        context: Any = None,
        key: str | None = None,
        deadline: float | timedelta | None = None,
    ) -> str:
        """Record a new run; a worker drives it. Returns the run id.

        key: at most one run per key: if a run holds it, that run's id is returned and
        nothing is created. deadline: seconds (or a timedelta) the run may take; unfinished
        then, it fails with DeadlineExceeded."""
        return ops.create_run(
            self.store, self.clock, workflow, args, on_complete=on_complete, context=context,
            key=key, deadline=deadline,
        )  # fmt: skip

    def resolve(self, run_id: str) -> str:
        return self.store.resolve(run_id)

    def status(self, run_id: str) -> RunStatus:
        return status_of(self.store, self.store.resolve(run_id))

    def list(
        self,
        state: str | None = None,
        workflow: str | None = None,
        limit: int | None = None,
        *,
        steps: bool = False,
    ) -> list[RunStatus]:
        """Runs, newest first (from the index: only changed journals are read)."""
        from .index import listed  # the listing code: not on `wfl start`'s path

        found = listed(self.store, state=state, workflow=workflow, limit=limit)
        if steps:
            return [st for s in found if (st := self._status_or_none(s.id)) is not None]
        return [RunStatus(dict(s.status), None, summary=s) for s in found]

    def _status_or_none(self, run_id: str) -> RunStatus | None:
        try:
            return status_of(self.store, run_id)
        except (FileNotFoundError, RunNotFound):
            return None  # cleaned up while we listed

    def wait(self, run_id: str, timeout: float | None = None) -> Any:
        """The run's result once it ends; raises WorkflowFailed / WorkflowCanceled. A run
        that continued as new is followed to the end of its chain."""
        run_id = self.store.resolve(run_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        for _ in _backoff():
            st = self.status(run_id)
            if st.state == "canceled":
                raise WorkflowCanceled(run_id)  # even before a worker winds it up
            if st.finished and (st.run_state is None or st.run_state.end is not None):
                if st.continued_as:
                    run_id = st.continued_as
                    continue
                return result_of(st)
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(run_id, timeout or 0.0)
        raise AssertionError("unreachable")

    def cancel(self, run_id: str) -> None:
        ops.cancel(self.store, self.clock, self.store.resolve(run_id))

    def cleanup(self, run_id: str) -> builtins.list[str]:
        return ops.cleanup(self.store, self.store.resolve(run_id))

    def cleanup_finished(self, older_than: float | None = None) -> builtins.list[str]:
        """Delete every finished run (last updated more than `older_than` seconds ago)."""
        now = self.clock.now()
        deleted: builtins.list[str] = []  # (`list` here is Client.list)
        listed = self.store.summaries(save=False)
        self._remove_unstarted({s.id for s in listed}, now, older_than)
        for s in listed:
            if s.status["state"] == "in_progress" or s.id in deleted:
                continue
            if older_than is not None and now - s.updated_at < older_than:
                continue
            parent = s.status.get("parent")
            if parent and self.store.exists(str(parent)):
                continue  # children go with their parent
            try:
                deleted += ops.cleanup(self.store, s.id)
            except (RefusedOperation, RunNotFound):
                continue
        return deleted

    def _remove_unstarted(self, runs: set[str], now: float, older_than: float | None) -> None:
        """Remove the journals that are no runs (starts cut short: unborn.py) and as old as
        the runs cleaned up (at least unborn.GRACE: a start may be making one). They were no
        runs, so they are not in what cleanup_finished returns."""
        remove = getattr(self.store, "remove_unstarted", None)
        if remove is None:
            return
        from . import unborn

        grace = max(unborn.GRACE, older_than or 0.0)
        for run_id in self.store.run_ids():
            if run_id not in runs:
                with contextlib.suppress(OSError):
                    remove(run_id, now, grace)

    def send_event(
        self, run_id: str, name: str, value: Any = None, *, error: str | None = None
    ) -> None:
        """Deliver event `name` (buffered until the run awaits it). With `error`, the
        awaiting `step.await_event` raises `wfl.EventFailed(error)` instead."""
        ops.send_event(self.store, self.clock, self.store.resolve(run_id), name, value, error=error)

    def restart(self, run_id: str, from_step: int | str | None = None) -> int:
        return ops.restart(self.store, self.clock, self.store.resolve(run_id), from_step)

    # -- schedules (SPEC §8) ----------------------------------------------------------------

    def add_schedule(
        self,
        name: str,
        workflow: WorkflowDef | str,
        *,
        cron: str,
        args: dict[str, Any] | None = None,
        tz: str = "UTC",
        overlap: str = "skip",
        catch_up: str = "last",
    ) -> dict[str, Any]:
        """Store a schedule; any running worker starts `workflow` at each cron slot (in `tz`).
        Returns it as list_schedules() shows it."""
        from . import schedules

        wf, flow = ops.resolve_workflow(workflow)
        coerced = ops.validate_start_args(wf, args)
        sched = schedules.new_schedule(
            name, wf, flow, cron=cron, tz=tz, args=coerced, overlap=overlap,
            catch_up=catch_up, now=self.clock.now(),
        )  # fmt: skip
        self.store.add_schedule(sched)
        self.store.notify_schedules()
        return schedules.describe(self.store, sched, self.clock.now())

    def list_schedules(self) -> builtins.list[dict[str, Any]]:
        from . import schedules

        now = self.clock.now()
        return [schedules.describe(self.store, s, now) for s in self.store.schedules()]

    def pause_schedule(self, name: str) -> None:
        self._set_paused(name, True)

    def resume_schedule(self, name: str) -> None:
        """Slots that passed while it was paused are not fired."""
        self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> None:
        now = self.clock.now()

        def change(sched: dict[str, Any]) -> dict[str, Any]:
            if sched.get("paused") and not paused:
                sched["cursor"] = max(float(sched["cursor"]), now)
            sched["paused"] = paused
            return sched

        self.store.update_schedule(name, change)
        self.store.notify_schedules()

    def remove_schedule(self, name: str) -> None:
        """Delete the schedule; runs it started are left alone."""
        self.store.remove_schedule(name)
        self.store.notify_schedules()

    def trigger_schedule(self, name: str) -> str:
        """Start the schedule's workflow now, outside its slots. Returns the run id."""
        from . import schedules

        sched = self.store.schedule(name)
        now = self.clock.now()
        run_id = schedules.start(self.store, self.clock, sched, now, key=None)

        def change(current: dict[str, Any]) -> dict[str, Any]:
            current["last_run"] = run_id
            return current

        self.store.update_schedule(name, change)
        return run_id


def result_of(st: RunStatus) -> Any:
    if st.state == "completed":
        return st.result
    if st.state == "canceled":
        raise WorkflowCanceled(st.id)
    traceback = st.to_dict().get("traceback")  # absent from the list form
    raise WorkflowFailed(st.id, st.error or "unknown error", traceback=traceback)


def _backoff() -> Iterator[None]:
    delay = 0.002
    yield
    while True:
        time.sleep(delay)  # a client waiting on another process: nothing to await but the file
        delay = min(delay * 1.5, 0.05)
        yield
