"""Test harness: a temp journal directory, a fake clock that skips time, an in-process worker.

    from wfl.testing import WorkflowTestEnv

    def test_reminder():
        with WorkflowTestEnv() as env:
            assert env.run(reminder, {"days": 30}) == "reminded"   # a month, in milliseconds

Registered as a pytest plugin: the `wfl_env` fixture yields a WorkflowTestEnv. Only that
fixture needs pytest: without it, this module imports and the env works.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .client import Client, RunStatus, result_of
from .clock import FakeClock
from .manager import WorkflowDef
from .stores.base import Store
from .worker import Worker


class WorkflowTestEnv:
    """Runs workflows with the worker's own engine, under a FakeClock."""

    def __init__(
        self,
        dir: str | Path | None = None,
        *,
        store: str | Store | None = None,
        start: float = 1_790_000_000.0,
    ) -> None:
        """A temp journal directory, unless `dir` or `store` (e.g. a PostgreSQL URL) says
        where the runs live."""
        given = dir is not None or store is not None
        self._tmp = None if given else tempfile.mkdtemp(prefix="wfl-test-")
        self.clock = FakeClock(start)
        self.client = Client(dir if dir is not None else self._tmp, store=store, clock=self.clock)
        self.dir = Path(self.client.dir) if dir is not None or store is None else None

    def __enter__(self) -> WorkflowTestEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.store.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- time -------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`, firing every timer due on the way in order,
        each at its own time (the next step after a one-minute sleep runs at that minute,
        and may set a timer that also falls within the interval), as a worker would in real
        time; the clock ends at now + seconds."""
        target = self.clock.now() + seconds
        self.clock.limit = target
        try:
            # nothing ahead of its time: work armed for a timer past the end would be cut off
            self._drive(skip=True, until=lambda: self.clock.now() >= target, ahead=False)
        finally:
            self.clock.limit = None
        self.clock.set(target)
        self._drive(skip=False)

    # -- runs -------------------------------------------------------------------------------

    def start(self, workflow: WorkflowDef | str, args: dict[str, Any] | None = None,
              **options: Any) -> str:  # fmt: skip
        return self.client.start(workflow, args, **options)

    def run(self, workflow: WorkflowDef | str, args: dict[str, Any] | None = None,
            **options: Any) -> Any:  # fmt: skip
        """Start a run and drive it to its end, skipping time; return its result."""
        run_id = self.start(workflow, args, **options)
        self._drive(skip=True, until=lambda: self.client.status(run_id).finished)
        return self.result(run_id)

    def run_until_idle(self) -> None:
        """Drive every run until it is finished or waits for an event; timers fire by
        moving the clock."""
        self._drive(skip=True)

    def send_event(
        self, run_id: str, name: str, value: Any = None, *, error: str | None = None
    ) -> None:
        self.client.send_event(run_id, name, value, error=error)
        self._drive(skip=False)

    def cancel(self, run_id: str) -> None:
        self.client.cancel(run_id)
        self._drive(skip=False)

    def status(self, run_id: str) -> RunStatus:
        return self.client.status(run_id)

    def result(self, run_id: str) -> Any:
        """The run's result; raises WorkflowFailed / WorkflowCanceled (or, if it has not
        finished, RuntimeError)."""
        st = self.client.status(run_id)
        if not st.finished:
            raise RuntimeError(f"run {run_id} has not finished: it is waiting ({st.next_wake_at})")
        return result_of(st)

    def _drive(self, *, skip: bool, until: Any = None, ahead: bool = True) -> None:
        self.clock.skip = skip
        worker = Worker(self.client.store, clock=self.clock, listen=False)
        if not ahead:
            worker.arm_ahead = worker.load_ahead = 0.0
        try:
            if skip:
                # with a limit (advance), schedule slots up to it are worth waiting for
                idle = self.clock.limit is None
                asyncio.run(worker.run(until=until, stop_when_idle=idle))
            else:
                asyncio.run(worker.run(once=True))
        finally:
            self.clock.skip = False


try:
    import pytest
except ImportError:  # pytest is not installed: everything but the fixture works
    pass
else:

    @pytest.fixture
    def wfl_env() -> Iterator[WorkflowTestEnv]:
        with WorkflowTestEnv() as env:
            yield env
