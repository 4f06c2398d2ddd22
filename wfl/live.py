"""What a worker in the foreground shows: its live table on a terminal (runs executing and
waiting, counts, steps/s), one line per event elsewhere, and the user's log lines."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .render import _span, console

if TYPE_CHECKING:  # the worker (asyncio, replay) is imported by whoever builds the view
    from .worker import Worker, WorkerEvent

log = logging.getLogger(__name__)

ROWS = 20  # runs listed; the rest are counted
RATE_WINDOW = 10.0  # seconds over which steps/s is measured


class WorkerView:
    """The worker's live table on a terminal, or one log line per event elsewhere.

    The table is drawn by rich's refresh thread (a few times a second), not on every event:
    a worker doing thousands of steps a second must not spend them redrawing."""

    def __init__(self, worker: Worker, *, live: bool) -> None:
        self.worker = worker
        self.live = live
        self.recent: deque[WorkerEvent] = deque(maxlen=8)
        self._live: Live | None = None
        self._samples: deque[tuple[float, int]] = deque()
        self._looked: dict[str, tuple[float | None, str]] = {}  # run id -> (wake, what)
        self._last: Group = Group()
        self._lock = threading.Lock()

    def __enter__(self) -> WorkerView:
        if self.live:
            self._live = Live(console=console, refresh_per_second=4, get_renderable=self._draw)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.refresh()  # the final state: what is left waiting
            self._live.__exit__(None, None, None)

    def on_event(self, event: WorkerEvent) -> None:
        if event.kind in ("run_finished", "step_failed", "broken", "paused", "on_complete_failed"):
            self.recent.append(event)
        if not self.live:
            # one plain line (no terminal: no styles); rich's rendering took ~0.5 ms, and a
            # step_started line is written just before the step's body runs
            out = console.file
            out.write(log_line(event).plain + "\n")
            out.flush()

    def on_log(self, record: logging.LogRecord) -> None:
        """A user's log line: above the live table, or among the event lines."""
        line = log_record_line(record)
        target = self._live.console if self._live is not None else console
        target.print(line, highlight=False, soft_wrap=True)

    def _draw(self) -> Group:
        with self._lock:
            try:
                self._last = self.render()
            except Exception:  # read mid-change by the loop thread: keep the last frame
                log.debug("live view frame skipped", exc_info=True)
            return self._last

    def render(self) -> Group:
        w = self.worker
        now = w.clock.now()
        table = Table(title="runs in progress", box=None, header_style="bold", title_justify="left")
        for column in ("RUN", "WORKFLOW", "STATE", "STEP / WAITS FOR", "ATTEMPT", "NEXT WAKE"):
            table.add_column(column, no_wrap=True)
        executing = []
        waiting: list[tuple[float, str, str, str, str]] = []
        for d in list(w.drivers.values()):
            running = [s for s in list(d.state.open.values()) if s.running]
            if running:
                for s in running:
                    since = f"running {_span(now - s.started_at)}" if s.started_at else "running"
                    executing.append((d.run_id, d.workflow.name, f"step {s.n} {s.name}",
                                      str(s.attempts), since))  # fmt: skip
            elif not d.closing:
                from .why import waits_for

                wake = d.state.next_wake_at()
                waiting.append(_waiting_row(d.run_id, d.workflow.name, waits_for(d.state), wake))
        for run_id, (workflow, what, wake) in list(w.waits.items()):
            if run_id in w.drivers:
                continue
            waiting.append(_waiting_row(run_id, workflow, what, wake))
        waiting.sort()
        shown = 0
        for run_id, workflow, what, attempt, since in executing[:ROWS]:
            table.add_row(run_id, workflow, Text("executing", "cyan"), what, attempt, since)
            shown += 1
        for wake, run_id, workflow, what, _ in waiting[: max(0, ROWS - shown)]:
            if what == "":
                what = self._look(run_id, None if wake == float("inf") else wake)
            table.add_row(run_id, workflow, Text("waiting", "yellow"), what, "-",
                          _next_wake(wake, now))  # fmt: skip
            shown += 1
        rows = len(executing) + len(waiting)
        more = Text(f"… and {rows - shown} more", style="dim") if rows > shown else Text("")
        stats = w.stats
        summary = Text(
            f"{len(executing)} executing · {len(waiting)} waiting · {stats['steps']} steps done"
            f" · {self._rate(stats['steps']):.1f} steps/s · {stats['runs_finished']} runs "
            f"finished · {stats['failures']} step failures",
            style="bold",
        )
        recent = Table(title="recent", box=None, title_justify="left", show_header=False)
        recent.add_column()
        for e in reversed(list(self.recent)):
            recent.add_row(log_line(e))
        return Group(table, more, recent, summary)

    def _rate(self, steps: int) -> float:
        """Steps finished per second over the last RATE_WINDOW seconds."""
        now = time.monotonic()  # the screen's own pace, not the worker's (possibly fake) clock
        self._samples.append((now, steps))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        t0, s0 = self._samples[0]
        return (steps - s0) / (now - t0) if now - t0 >= 0.5 else 0.0

    def _look(self, run_id: str, wake: float | None) -> str:
        """What a run the worker knows only from the index waits for: read its journal once
        (in the refresh thread, for the few rows shown)."""
        seen = self._looked.get(run_id)
        if seen is not None and seen[0] == wake:
            return seen[1]
        from . import ops
        from .why import waits_for

        try:
            what = waits_for(ops.read_state(self.worker.store, run_id))
        except Exception:  # cleaned up, corrupt...: the worker reports those itself
            what = "?"
        self._looked[run_id] = (wake, what)
        return what


def _waiting_row(
    run_id: str, workflow: str, what: str | None, wake: float | None
) -> tuple[float, str, str, str, str]:
    # soonest wake first; runs only an event can wake come last
    return (wake if wake is not None else float("inf"), run_id, workflow, what or "", "")


def _next_wake(wake: float, now: float) -> str:
    if wake == float("inf"):
        return "on event"
    return "now" if wake <= now else "in " + _span(wake - now)


def log_line(e: WorkerEvent) -> Text:
    when = datetime.fromtimestamp(e.at or time.time(), UTC).strftime("%H:%M:%S.%f")[:-3]
    step = f" step {e.step} {e.name}" if e.step is not None else ""
    attempt = f" attempt {e.attempt}" if e.attempt else ""
    detail = f" {e.detail}" if e.detail else ""
    style = "red" if e.kind in ("step_failed", "broken", "paused", "on_complete_failed") else ""
    if e.kind == "run_finished":
        style = {"success": "green", "failed": "red", "canceled": "yellow"}.get(e.detail, "")
    return Text(f"{when} {e.run_id} {e.workflow} {e.kind}{step}{attempt}{detail}", style=style)


_LEVEL_STYLE = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red", "DEBUG": "dim"}


def log_record_line(record: logging.LogRecord) -> Text:
    """`12:00:00.123 RUNID WORKFLOW INFO message` for a user's log line (the workflow is the
    step.logger's; other loggers show their own name)."""
    when = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S.%f")[:-3]
    run_id = getattr(record, "run_id", None) or "-"
    name = record.name
    if name.startswith("wfl.workflow."):
        name = name[len("wfl.workflow.") :]
    message = record.getMessage()
    if record.exc_info:
        message += "\n" + logging.Formatter().formatException(record.exc_info)
    level = record.levelname
    return Text(f"{when} {run_id} {name} {level} {message}", style=_LEVEL_STYLE.get(level, ""))
