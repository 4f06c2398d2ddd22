"""What a worker in the foreground shows: its live table on a terminal (runs executing and
waiting, counts, steps/s), one line per event elsewhere, and the user's log lines.

A worker of several processes (`wfl worker --processes N`) shows one table for all of them:
each child collects its rows (`collect`) and sends them to the supervisor, whose `WholeView`
merges them with `render`; one process draws `collect`'s rows itself (`WorkerView`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .clock import whole_and_micros
from .render import _span, console

if TYPE_CHECKING:  # the worker (asyncio, replay) is imported by whoever builds the view
    from .worker import Worker, WorkerEvent

log = logging.getLogger(__name__)

ROWS = 20  # runs listed; the rest are counted
RATE_WINDOW = 10.0  # seconds over which steps/s is measured
RECENT = ("run_finished", "step_failed", "broken", "paused", "on_complete_failed")
COUNTS = ("steps", "runs_finished", "failures")
LINES_CHUNK = 1000  # characters of lines in one write: at most 4,000 bytes (PIPE_BUF: 4,096)
LINES_AFTER = 0.005  # seconds from an event until its line is written (with the others since)

# A snapshot of one worker process's table, as plain JSON values (children send it to their
# supervisor): {"executing": [[run, workflow, step, attempt, started_at|None]...],
# "waiting": [[wake|None, run, workflow, what, held]...] (soonest first), "n_executing": int,
# "n_waiting": int, "steps": int, "runs_finished": int, "failures": int}
Snapshot = dict[str, Any]


def collect(
    w: Worker, look: Callable[[str, float | None], str], keep: Callable[[str], bool] | None = None
) -> Snapshot:
    """The first ROWS rows of each kind and the counts. `keep`: which waiting runs this
    process reports (a child reports its own share; its siblings report theirs)."""
    executing = []
    waiting: list[tuple[float, str, str, str]] = []
    for d in list(w.drivers.values()):
        running = [s for s in list(d.state.open.values()) if s.running]
        if running:
            for s in running:
                executing.append([d.run_id, d.workflow.name, f"step {s.n} {s.name}",
                                  str(s.attempts), s.started_at])  # fmt: skip
        elif not d.closing:
            from .why import waits_for

            wake = d.state.next_wake_at()
            waiting.append(_waiting_row(d.run_id, d.workflow.name, waits_for(d.state), wake))
    held = len(waiting)
    for run_id, (workflow, what, wake) in list(w.waits.items()):
        if run_id in w.drivers or (keep is not None and not keep(run_id)):
            continue
        waiting.append(_waiting_row(run_id, workflow, what, wake))
    live = {row[1] for row in waiting[:held]}
    waiting.sort()
    shown = []
    for wake, run_id, workflow, what in waiting[: max(0, ROWS - len(executing))]:
        finite = None if wake == float("inf") else wake
        # held: this process holds the run (its row is the truth where two processes list it)
        shown.append([finite, run_id, workflow, what or look(run_id, finite), run_id in live])
    return {"executing": executing[:ROWS], "waiting": shown, "n_executing": len(executing),
            "n_waiting": len(waiting), **{k: w.stats[k] for k in COUNTS}}  # fmt: skip


def render(snapshots: list[Snapshot], recent: list[Text], rate: float, now: float) -> Group:
    """One table of every process's rows: executing first, then waiting, soonest wake first."""
    table = Table(title="runs in progress", box=None, header_style="bold", title_justify="left")
    for column in ("RUN", "WORKFLOW", "STATE", "STEP / WAITS FOR", "ATTEMPT", "NEXT WAKE"):
        table.add_column(column, no_wrap=True)
    executing = [row for s in snapshots for row in s["executing"]]
    # a run two processes list (one holds it, the other last saw it before): shown once, as
    # the process that holds it sees it
    rows = sorted((row for s in snapshots for row in s["waiting"]), key=_soonest)
    seen = {row[0] for row in executing} | {row[1] for row in rows if row[4]}
    waiting = []
    for row in rows:
        if row[4] or row[1] not in seen:
            seen.add(row[1])
            waiting.append(row)
    n_executing = sum(s["n_executing"] for s in snapshots)
    n_waiting = sum(s["n_waiting"] for s in snapshots)
    shown = 0
    for run_id, workflow, what, attempt, started_at in executing[:ROWS]:
        since = f"running {_span(now - started_at)}" if started_at else "running"
        table.add_row(run_id, workflow, Text("executing", "cyan"), what, attempt, since)
        shown += 1
    for wake, run_id, workflow, what, _ in waiting[: max(0, ROWS - shown)]:
        table.add_row(run_id, workflow, Text("waiting", "yellow"), what, "-",
                      _next_wake(wake, now))  # fmt: skip
        shown += 1
    rows = n_executing + n_waiting
    more = Text(f"… and {rows - shown} more", style="dim") if rows > shown else Text("")
    total = {k: sum(s[k] for s in snapshots) for k in COUNTS}
    summary = Text(
        f"{n_executing} executing · {n_waiting} waiting · {total['steps']} steps done"
        f" · {rate:.1f} steps/s · {total['runs_finished']} runs "
        f"finished · {total['failures']} step failures",
        style="bold",
    )
    panel = Table(title="recent", box=None, title_justify="left", show_header=False)
    panel.add_column()
    for line in reversed(recent):
        panel.add_row(line)
    return Group(table, more, panel, summary)


class Rate:
    """Steps finished per second over the last RATE_WINDOW seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def __call__(self, steps: int) -> float:
        now = time.monotonic()  # the screen's own pace, not the worker's (possibly fake) clock
        self._samples.append((now, steps))
        while len(self._samples) > 2 and now - self._samples[0][0] > RATE_WINDOW:
            self._samples.popleft()
        t0, s0 = self._samples[0]
        return (steps - s0) / (now - t0) if now - t0 >= 0.5 else 0.0


class WorkerView:
    """The worker's live table on a terminal, or one log line per event elsewhere.

    The table is drawn by rich's refresh thread (a few times a second), not on every event:
    a worker doing thousands of steps a second must not spend them redrawing."""

    def __init__(self, worker: Worker, *, live: bool) -> None:
        self.worker = worker
        self.live = live
        self.recent: deque[WorkerEvent] = deque(maxlen=8)
        self._live: Live | None = None
        self._rate = Rate()
        self._looked: dict[str, tuple[float | None, str]] = {}  # run id -> (wake, what)
        self._last: Group = Group()
        self._lock = threading.Lock()
        self._lines: list[WorkerEvent] = []  # events whose lines are not written yet
        self._lines_due = False  # a write of them is on its way
        self._lines_lock = threading.Lock()

    def __enter__(self) -> WorkerView:
        if self.live:
            self._live = Live(console=console, refresh_per_second=4, get_renderable=self._draw)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._write_lines()
        if self._live is not None:
            self._live.refresh()  # the final state: what is left waiting
            self._live.__exit__(None, None, None)

    def on_event(self, event: WorkerEvent) -> None:
        if event.kind in RECENT:
            self.recent.append(event)
        if not self.live:
            # one plain line (no terminal: no styles; rich's rendering took ~0.5 ms), written
            # with the others of the next LINES_AFTER seconds: one write and flush for many
            # lines (two writes a step were ~10% of the loop's time), and neither the line's
            # formatting nor its write on the way from a run's news to its first step (one
            # write a turn put ~0.1 ms of the worker's cold-cache CPU there: issue 16)
            with self._lines_lock:  # (on_log writes them from any thread)
                self._lines.append(event)
                first, self._lines_due = not self._lines_due, True
            if first:
                try:
                    asyncio.get_running_loop().call_later(LINES_AFTER, self._write_lines)
                except RuntimeError:  # (no loop: at once)
                    self._write_lines()

    def write_pending(self) -> None:
        """Write the event lines not written yet (before a diagnostic line: foreground.py)."""
        if self._lines_due:
            self._write_lines()

    def _write_lines(self) -> None:
        """Write the pending event lines, in writes of whole lines of at most LINES_CHUNK
        characters: each process of a worker writes its lines to the same stdout, and a pipe
        keeps a write of up to PIPE_BUF (4096) bytes whole (a line each, before)."""
        with self._lines_lock:
            events, self._lines = self._lines, []
            self._lines_due = False
            out = console.file
            chunk: list[str] = []
            size = 0
            for event in events:
                line = plain_line(event)
                if chunk and size + len(line) > LINES_CHUNK:
                    out.write("".join(chunk))
                    out.flush()
                    chunk, size = [], 0
                chunk.append(line)
                size += len(line)
            if chunk:
                out.write("".join(chunk))
                out.flush()

    def on_log(self, record: logging.LogRecord) -> None:
        """A user's log line: above the live table, or among the event lines."""
        self._write_lines()  # the event lines before it first
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
        snap = collect(self.worker, self._look)
        lines = [log_line(e) for e in list(self.recent)]
        return render([snap], lines, self._rate(snap["steps"]), self.worker.clock.now())

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


class WholeView:
    """The supervisor's table for a worker of several processes: the children's latest
    snapshots merged, counts summed (a restarted child's earlier counts kept)."""

    def __init__(self) -> None:
        self.snapshots: dict[int, Snapshot] = {}  # child (one per start) -> its last snapshot
        self.gone = dict.fromkeys(COUNTS, 0)  # the counts of children that exited
        self.final: dict[int, Snapshot] = {}  # children that ended: their last snapshot
        self.recent: deque[Text] = deque(maxlen=8)
        self._rate = Rate()
        self._lock = threading.Lock()
        self._last: Group = Group()
        self._live = Live(console=console, refresh_per_second=4, get_renderable=self._draw)

    def __enter__(self) -> WholeView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.refresh()
        self._live.__exit__(None, None, None)

    def update(self, child: int, snapshot: Snapshot) -> None:
        with self._lock:
            self.snapshots[child] = snapshot

    def exited(self, child: int, *, final: bool) -> None:
        """`final`: the worker is stopping (or this child drained its share): its last rows
        stay, as one process's table shows what is left waiting when it stops. Else (it
        died, it is restarted): its counts stay, its rows come from the new process."""
        with self._lock:
            last = self.snapshots.pop(child, None)
            if last is None:
                return
            if final:
                self.final[child] = last
            else:
                self._count(last)

    def new_round(self) -> None:
        """--once's last drain starts: the rows of the children before it are history."""
        with self._lock:
            for last in self.final.values():
                self._count(last)
            self.final.clear()

    def _count(self, snapshot: Snapshot) -> None:
        for k in COUNTS:
            self.gone[k] += int(snapshot[k])

    def event(self, fields: dict[str, Any]) -> None:
        with self._lock:
            self.recent.append(event_line(**fields))

    def print(self, text: str, style: str = "") -> None:
        self._live.console.print(Text(text, style=style), highlight=False, soft_wrap=True)

    def _draw(self) -> Group:
        with self._lock:
            try:
                gone: Snapshot = {"executing": [], "waiting": [], "n_executing": 0,
                                  "n_waiting": 0, **self.gone}  # fmt: skip
                snaps = [gone, *self.final.values(), *self.snapshots.values()]
                rate = self._rate(sum(int(s["steps"]) for s in snaps))
                self._last = render(snaps, list(self.recent), rate, time.time())
            except Exception:  # a malformed snapshot: keep the last frame
                log.debug("live view frame skipped", exc_info=True)
            return self._last


def _waiting_row(
    run_id: str, workflow: str, what: str | None, wake: float | None
) -> tuple[float, str, str, str]:
    # soonest wake first; runs only an event can wake come last
    return (wake if wake is not None else float("inf"), run_id, workflow, what or "")


def _soonest(row: list[Any]) -> tuple[float, str]:
    return (float("inf") if row[0] is None else float(row[0]), str(row[1]))


def _next_wake(wake: float | None, now: float) -> str:
    if wake is None:
        return "on event"
    return "now" if wake <= now else "in " + _span(wake - now)


def event_fields(e: WorkerEvent) -> dict[str, Any]:
    return {"kind": e.kind, "run_id": e.run_id, "workflow": e.workflow, "step": e.step,
            "name": e.name, "attempt": e.attempt, "detail": e.detail, "at": e.at}  # fmt: skip


def log_line(e: WorkerEvent) -> Text:
    return event_line(**event_fields(e))


def plain_line(e: WorkerEvent) -> str:
    """log_line(e).plain + "\\n", without building rich's Text."""
    where = f" step {e.step} {e.name}" if e.step is not None else ""
    tries = f" attempt {e.attempt}" if e.attempt else ""
    more = f" {e.detail}" if e.detail else ""
    return f"{_clock(e.at or time.time())} {e.run_id} {e.workflow} {e.kind}{where}{tries}{more}\n"


_SECOND: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _clock(at: float) -> str:
    """HH:MM:SS.mmm (UTC) of `at` as event_line writes it (datetime rounds to the microsecond,
    strftime's %f then cut to the millisecond); the lines of one second share its formatting
    (strftime costs ~3 us a line)."""
    second, us = whole_and_micros(at)
    if _SECOND[0] != second:
        _SECOND[0] = second
        _SECOND[1] = datetime.fromtimestamp(second, UTC).strftime("%H:%M:%S")
    return f"{_SECOND[1]}.{us // 1000:03d}"


def event_line(
    *, kind: str, run_id: str, workflow: str, step: int | None, name: str, attempt: int,
    detail: str, at: float,
) -> Text:  # fmt: skip
    when = datetime.fromtimestamp(at or time.time(), UTC).strftime("%H:%M:%S.%f")[:-3]
    where = f" step {step} {name}" if step is not None else ""
    tries = f" attempt {attempt}" if attempt else ""
    more = f" {detail}" if detail else ""
    style = "red" if kind in ("step_failed", "broken", "paused", "on_complete_failed") else ""
    if kind == "run_finished":
        style = {"success": "green", "failed": "red", "canceled": "yellow"}.get(detail, "")
    return Text(f"{when} {run_id} {workflow} {kind}{where}{tries}{more}", style=style)


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
