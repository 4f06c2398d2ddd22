"""Everything wfl shows on a terminal: run tables, run detail, timelines, live views (rich)."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from . import jsonout
from .bigtable import BigTable, Cell, cell
from .client import RunStatus
from .clock import utc_text
from .runlist import HEADERS, STATE_COLUMN, span, until
from .tracebacks import format_tb, is_traceback, where

STATE_STYLE = {
    "in_progress": "cyan",
    "completed": "green",
    "failed": "red",
    "canceled": "yellow",
    "done": "green",
    "running": "cyan",
    "scheduled": "dim",
}

# Off a terminal (pipes, CI logs) rich would assume 80 columns and squeeze the tables.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


_span = span  # (live.py's name for it)


def short_time(iso_time: str | None) -> str:
    if not iso_time:
        return "-"
    if len(iso_time) == 29 and iso_time.endswith("+00:00"):  # as clock.iso writes them
        return f"{iso_time[:10]} {iso_time[11:23]}"
    dt = datetime.fromisoformat(iso_time).astimezone(UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def styled(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def runs_table(rows: list[list[str]]) -> Table:
    """The run list (rows from runlist.row), for rich: on a terminal, or when it does not fit
    runlist's plain layout."""
    table = BigTable(box=None, header_style="bold", pad_edge=False)
    for column in HEADERS:
        table.add_column(column, no_wrap=True)
    for row in rows:
        cells: list[Any] = list(row)
        cells[STATE_COLUMN] = styled(row[STATE_COLUMN])
        table.add_row(*cells)
    return table


def run_detail(st: RunStatus, *, flow_changed: bool = False) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("run", st.id)
    head.add_row("workflow", f"{st.workflow}  ({st.flow})")
    if flow_changed:
        head.add_row("", Text("the flow file changed since this run started", style="yellow"))
    head.add_row("state", styled(st.state))
    head.add_row("args", jsonout.dumps(st.args))
    head.add_row("created", short_time(st.created_at))
    head.add_row("updated", short_time(st.updated_at))
    if not st.finished:
        head.add_row("next wake", f"{short_time(st.next_wake_at)}  ({until(st.next_wake_at)})")
    if st.state == "completed":
        head.add_row("result", jsonout.dumps(st.result))
    rs = st.run_state
    if st.error:
        head.add_row("error", Text(str(st.error), style="red"))
        _add_where(head, rs.tb if rs is not None else None)
    elif rs is not None:  # in progress: the latest failed attempt of a step that goes on
        last = max((s for s in rs.steps.values() if s.error), key=lambda s: s.n, default=None)
        if last is not None:
            head.add_row("last error", Text(f"step {last.n} ({last.name}): {last.error}", "red"))
            _add_where(head, last.tb)
    if rs is not None and rs.on_complete:
        if rs.on_complete_error:
            note = Text(f"raised {rs.on_complete_error}", style="red")
        else:
            note = Text("ran" if rs.on_complete_ran else "pending")
        if rs.on_complete_calls > 1:
            note += Text(f" (called {rs.on_complete_calls} times)", style="yellow")
        head.add_row("on_complete", Text(f"{rs.on_complete[1]} ({rs.on_complete[0]}): ") + note)
        if rs.on_complete_error:
            _add_where(head, rs.on_complete_tb)
    parent = st.to_dict().get("parent")
    if parent:
        head.add_row("parent", str(parent))
    _patterns_rows(head, st.to_dict())
    return Group(head, Text(""), steps_table(st))


def _add_where(head: Table, tb: dict[str, Any] | None) -> None:
    at = where(tb, relative_to=os.getcwd())
    if at is not None:
        head.add_row("at", Text(at, style="red"))


def _patterns_rows(head: Table, data: dict[str, Any]) -> None:
    """SPEC §8: key, deadline, schedule, the continue-as-new chain both ways, progress."""
    if data.get("key") is not None:
        head.add_row("key", data["key"])
    if data.get("deadline"):
        head.add_row("deadline", short_time(data["deadline"]))
    if data.get("schedule"):
        head.add_row("schedule", f"{data['schedule']}  (slot {short_time(data['scheduled_at'])})")
    if data.get("continued_from"):
        head.add_row("continued from", str(data["continued_from"]))
    if data.get("continued_as"):
        head.add_row("continued as", str(data["continued_as"]))
    if data.get("progress") is not None:
        head.add_row("progress", jsonout.dumps(data["progress"]))


def _zoned(iso_time: str | None, tz: str) -> str:
    """A fire time as the schedule's zone sees it (that is what its cron means)."""
    if not iso_time:
        return "-"
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(iso_time).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M %Z")


def schedules_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "WORKFLOW", "CRON", "TZ", "NEXT FIRE", "LAST RUN", "PAUSED"):
        table.add_column(column, no_wrap=True)
    for r in rows:
        last = f"{r['last_run']} ({r['last_run_state']})" if r["last_run"] else "-"
        table.add_row(
            r["name"], r["workflow"], r["cron"], r["tz"],
            _zoned(r["next_fire_at"], r["tz"]),
            last, "yes" if r["paused"] else "no",
        )  # fmt: skip
    return table


def steps_table(st: RunStatus) -> Table:
    table = BigTable(box=None, header_style="bold", pad_edge=False)
    for column in ("#", "NAME", "KIND", "STATE", "ATTEMPTS", "RUN AT", "STARTED", "FINISHED"):
        table.add_column(column, no_wrap=True)
    table.add_column("ERROR")
    rs = st.run_state
    for s in st.to_dict().get("steps", []):
        error = s["error"] or ""
        state = rs.steps.get(s["step"]) if rs is not None else None
        at = where(state.tb, relative_to=os.getcwd()) if state is not None and error else None
        if at is not None:
            error += f" ({at})"
        table.add_row(
            str(s["step"]),
            s["name"],
            s["kind"],
            cell(s["state"], STATE_STYLE.get(s["state"], "")),
            str(s["attempts"]),
            short_time(s["run_at"]),
            short_time(s["started_at"]),
            short_time(s["finished_at"]),
            cell(error, "red"),
        )
    return table


def failure_tracebacks(records: list[dict[str, Any]]) -> Group:
    """Every failed attempt of the run (and the run's end, and on_complete) with its
    recorded traceback, oldest first: `wfl status RUN --traceback`."""
    names: dict[int, str] = {}
    parts: list[Text] = []
    for r in records:
        t = r["t"]
        if t == "sched":
            names[r["n"]] = r["name"]
            continue
        if t == "fail":
            then = "retried" if r.get("retry_at") is not None else "final"
            name = names.get(r["n"], "?")
            head = f"step {r['n']} ({name}) attempt {r['attempt']} failed ({then})"
            error = f"{r['error_type']}: {r['message']}"
        elif t == "end" and r.get("kind") == "failed":
            head, error = "the run failed", str(r.get("error"))
        elif t == "oc" and not r.get("ok"):
            head, error = "on_complete raised", str(r.get("error"))
        else:
            continue
        parts.append(Text(head, style="bold red"))
        tb = r.get("tb")
        parts.append(Text(format_tb(tb) if tb is not None and is_traceback(tb) else error + "\n"))
    if not parts:
        return Group(Text("no failed attempts", style="dim"))
    return Group(*parts)


def timeline(records: list[dict[str, Any]]) -> Table:
    table = BigTable(box=None, header_style="bold", pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("TIME (UTC)", no_wrap=True)
    table.add_column("RECORD", no_wrap=True)
    table.add_column("WHAT")
    add_row = table.add_row
    for i, r in enumerate(records):
        at = r.get("at") or r.get("created_at")
        when = utc_text(at) if at else "-"
        sentence = describe_record(r)
        what: Cell | Text = sentence
        tb = r.get("tb")
        if tb is not None and is_traceback(tb):
            # the whole recorded traceback, under the record it explains
            what = Text(sentence, style=sentence.style)
            what.append("\n" + format_tb(tb).rstrip("\n"), style="dim")
        add_row(str(i), when, r["t"], what)
    return table


def _short(value: Any, limit: int = 80) -> str:
    text = jsonout.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(ts: float | None) -> str:
    return "-" if ts is None else utc_text(ts)


def describe_record(r: dict[str, Any]) -> Cell:
    """One journal record as a sentence (the timeline of `wfl show`), styled."""
    t = r["t"]
    n = r.get("n")
    if t == "run":
        parent = f", child of {r['parent'][0]} step {r['parent'][1]}" if r.get("parent") else ""
        extra = "".join(
            f", {label} {value}"
            for label, value in (
                ("key", r.get("key")),
                ("deadline", _when(r["deadline"]) if r.get("deadline") else None),
                ("schedule", r.get("schedule")),
                ("continued from", r.get("continued_from")),
            )
            if value is not None
        )
        return cell(
            f"run {r['id']} of {r['workflow']}({_short(r['args'])}) from {r['flow']}, "
            f"version {r.get('version', 0)}{parent}{extra}"
        )
    if t == "sched":
        due = f", due {_when(r['run_at'])}" if r.get("run_at", 0) > r.get("at", 0) else ""
        return cell(f"step {n} called: {r['kind']} {r['name']} {_short(r['args'])}{due}")
    if t == "att":
        child = f" (child run {r['child']})" if r.get("child") else ""
        return cell(f"step {n} attempt {r['attempt']} starts{child}", "cyan")
    if t == "done":
        return cell(f"step {n} done: {_short(r['result'])}", "green")
    if t == "fail":
        then = f"; retry at {_when(r['retry_at'])}" if r.get("retry_at") else "; final"
        text = f"step {n} attempt {r['attempt']} failed: {r['error_type']}: {r['message']}{then}"
        return cell(text, "red")
    if t == "event":
        return cell(f"event {r['name']!r} delivered: {_short(r['value'])}")
    if t == "evfail":
        return cell(f"event {r['name']!r} delivered as an error: {r.get('error')}", "red")
    if t == "cancel":
        return cell("cancel requested", "yellow")
    if t == "end":
        kind = r["kind"]
        if kind == "success" and r.get("continued_as"):
            return cell(f"run completed: continued as run {r['continued_as']}", "green")
        if kind == "success":
            return cell(f"run completed: {_short(r.get('result'))}", "green")
        if kind == "failed":
            return cell(f"run failed: {r.get('error')}", "red")
        return cell("run canceled", "yellow")
    if t == "ocs":
        again = " (again: an earlier call did not return)" if r.get("attempt", 1) > 1 else ""
        return cell(f"on_complete call {r.get('attempt', 1)} started{again}")
    if t == "oc":
        if r.get("ok"):
            return cell("on_complete done")
        return cell(f"on_complete raised {r.get('error')}", "red")
    if t == "restart":
        return cell(f"restart from step {r['from_step']}", "yellow")
    if t == "child":
        return cell(f"child run {r['child_id']} of step {n} ended: {r['kind']}")
    if t == "progress":
        return cell(f"progress: {_short(r.get('value'))}", "dim")
    return cell(_short({k: v for k, v in r.items() if k != "t"}, 200))
