"""What the web view shows, as JSON: run rows, pages of the runs table, one run in full.

Everything comes from the Python API (Client, RunStatus, views, render): this module only
arranges it for the page. No I/O of its own beyond those calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wfl.client import Client, RunStatus
from wfl.clock import iso
from wfl.errors import InvalidRunId, JournalCorrupt, RunNotFound

STATES = ("in_progress", "completed", "failed", "canceled")
PER_PAGE = 50
MAX_PER_PAGE = 500
# What one push of a run page carries at most (it is re-sent as the run changes): the
# newest records and steps; the rest is a `wfl show` / `wfl status RUN` away.
JOURNAL_SHOWN = 500
STEPS_SHOWN = 300

Row = dict[str, Any]


def row(st: RunStatus) -> Row:
    """One line of the runs table."""
    done, total, current = st.step_counts
    data = st.to_dict()
    data.pop("steps", None)
    data.pop("flow", None)
    data.pop("args", None)  # can be large; the run page has them
    data.pop("result", None)
    data.pop("traceback", None)
    if data.get("progress") is not None:  # up to 64 KiB: the table shows its beginning
        data["progress"] = _short(data["progress"], 120)
    data.update(done=done, total=total, current=current, created_ts=_created(st))
    return data


def _short(value: Any, limit: int) -> str:
    from wfl import jsonout

    text = value if isinstance(value, str) else jsonout.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _created(st: RunStatus) -> float:
    """Creation time in full precision (the ISO form keeps milliseconds), for ordering."""
    if st.summary is not None:
        return float(st.summary.created_at)
    if st.run_state is not None:
        return float(st.run_state.created_at)
    from datetime import datetime

    return datetime.fromisoformat(st.created_at).timestamp()


class RunRows:
    """Every run's row, kept in memory and refreshed only where the store says it changed,
    so a page of the table is a filter over a list, not a read of 10,000 journals."""

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self._order: list[Row] | None = None

    def apply(self, found: dict[str, Row | None]) -> set[str]:
        """Take in re-read rows (None: the run is gone); returns the ids whose row changed."""
        changed = set()
        for run_id, new in found.items():
            if new == self.rows.get(run_id):
                continue
            changed.add(run_id)
            if new is None:
                self.rows.pop(run_id, None)
            else:
                self.rows[run_id] = new
        if changed:
            self._order = None
        return changed

    def replace(self, rows: dict[str, Row]) -> set[str]:
        """Swap in a full reload; returns the ids that differ."""
        changed = {r for r in rows.keys() | self.rows.keys() if rows.get(r) != self.rows.get(r)}
        if changed:
            self.rows = rows
            self._order = None
        return changed

    def ordered(self) -> list[Row]:
        """Newest first (ties by id, so pages are stable)."""
        if self._order is None:
            self._order = sorted(
                self.rows.values(), key=lambda r: (r["created_ts"], r["id"]), reverse=True
            )
        return self._order

    def page(
        self,
        *,
        state: str | None = None,
        workflow: str | None = None,
        prefix: str | None = None,
        page: int = 1,
        per_page: int = PER_PAGE,
    ) -> dict[str, Any]:
        """One page of the runs table, with the counts the filters show."""
        per_page = max(1, min(per_page, MAX_PER_PAGE))
        counts = dict.fromkeys(STATES, 0)
        workflows: dict[str, int] = {}
        matching: list[Row] = []
        for r in self.ordered():
            if prefix and not r["id"].startswith(prefix):
                continue
            workflows[r["workflow"]] = workflows.get(r["workflow"], 0) + 1
            if workflow and r["workflow"] != workflow:
                continue
            counts[r["state"]] = counts.get(r["state"], 0) + 1
            if state and r["state"] != state:
                continue
            matching.append(r)
        pages = max(1, -(-len(matching) // per_page))
        page = max(1, min(page, pages))
        start = (page - 1) * per_page
        return {
            "runs": matching[start : start + per_page],
            "total": len(matching),
            "all": len(self.rows),
            "page": page,
            "pages": pages,
            "per_page": per_page,
            "counts": counts,
            "workflows": sorted(workflows),
        }


def read_rows(client: Client, run_ids: Iterable[str]) -> dict[str, Row | None]:
    """The current rows of `run_ids` (None for a run that is gone). A journal that does not
    read right now (mid-write, or damaged) is left out: the next signal or resync tells."""
    found: dict[str, Row | None] = {}
    for run_id in run_ids:
        try:
            found[run_id] = row(client.status(run_id))
        except (RunNotFound, FileNotFoundError):
            found[run_id] = None
        except (JournalCorrupt, InvalidRunId):
            continue
    return found


def run_detail(client: Client, run_id: str) -> dict[str, Any]:
    """One run in full: status, why, steps with every attempt, children, events, journal."""
    from wfl import views
    from wfl.render import describe_record

    st = client.status(run_id)
    data = st.to_dict()
    records, damage = views.readable_records(client, run_id)
    done, total, current = st.step_counts
    data.update(
        done=done,
        total=total,
        current=current,
        why=views.explain_run(client, run_id),
        timeline=step_timeline(st, records)[-STEPS_SHOWN:],
        events=_events(st),
        children=_children(st),
        journal_total=len(records),
        journal=[_journal_line(i, r, describe_record) for i, r in enumerate(records)][
            -JOURNAL_SHOWN:
        ],
        damage=str(damage) if damage is not None else None,
        flow_changed=_flow_changed(st),
    )
    rs = st.run_state
    if rs is not None:
        data["on_complete"] = (
            {"function": rs.on_complete[1], "flow": rs.on_complete[0], "ran": rs.on_complete_ran,
             "error": rs.on_complete_error}
            if rs.on_complete else None
        )  # fmt: skip
        data["restarts"] = rs.restarts
        data["version"] = rs.version
    return data


def _flow_changed(st: RunStatus) -> bool:
    try:
        return st.flow_changed
    except OSError:
        return False


def step_timeline(st: RunStatus, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps as the page draws them: each with its wait and every attempt.

    A step's state comes from RunState; its history (attempt starts, failures, retry waits)
    from the decoded records of the current generation (after the last restart that cut it).
    """
    steps = {s["step"]: dict(s) for s in data_steps(st)}
    for s in steps.values():
        s.update(called_at=None, attempt_log=[], child=None)
    cut_at: dict[int, int] = {}  # a restart voids steps >= from_step written before it
    for i, r in enumerate(records):
        if r.get("t") == "restart":
            for n in steps:
                if n >= int(r["from_step"]):
                    cut_at[n] = i
    for i, r in enumerate(records):
        n = r.get("n")
        if n is None or n not in steps or i < cut_at.get(n, -1):
            continue
        s = steps[n]
        t = r["t"]
        log: list[dict[str, Any]] = s["attempt_log"]
        if t == "sched":
            s["called_at"] = iso(r.get("at"))
            s["args"] = r.get("args")
            if r.get("event"):
                s["event"] = r["event"]
        elif t == "att":
            log.append({"attempt": r["attempt"], "started_at": iso(r["at"]), "ended_at": None,
                        "outcome": "running", "error": None, "retry_at": None})  # fmt: skip
            if r.get("child"):
                s["child"] = r["child"]
        elif t in ("done", "fail"):
            entry = log[-1] if log and log[-1]["attempt"] == r.get("attempt") else None
            if entry is None:  # a step that finished without an attempt record (timers, now())
                entry = {"attempt": r.get("attempt", 1), "started_at": None, "retry_at": None}
                log.append(entry)
            entry["ended_at"] = iso(r["at"])
            if t == "done":
                entry.update(outcome="done", error=None)
                s["result"] = r.get("result")
            else:
                entry.update(outcome="failed", error=f"{r['error_type']}: {r['message']}",
                             retry_at=iso(r.get("retry_at")))  # fmt: skip
        elif t == "child":
            s["child"] = r["child_id"]
            s["child_state"] = r["kind"]
    return [steps[n] for n in sorted(steps)]


def data_steps(st: RunStatus) -> list[dict[str, Any]]:
    return list(st.to_dict().get("steps", []))


def _events(st: RunStatus) -> list[dict[str, Any]]:
    rs = st.run_state
    if rs is None:
        return []
    consumed = rs.consumed_events()
    return [
        {"name": e["name"], "value": e.get("value"), "at": iso(e.get("at")),
         "consumed": e["id"] in consumed}
        for e in rs.events
    ]  # fmt: skip


def _children(st: RunStatus) -> list[dict[str, Any]]:
    rs = st.run_state
    if rs is None:
        return []
    out = []
    for n, s in sorted(rs.steps.items()):
        if s.child_id:
            ended = rs.children_done.get(n)
            out.append({"id": s.child_id, "step": n, "name": s.name,
                        "state": _ended(ended)})  # fmt: skip
    return out


def _journal_line(i: int, r: dict[str, Any], describe: Any) -> dict[str, Any]:
    text = describe(r)
    at = r.get("at", r.get("created_at"))
    return {"i": i, "at": iso(at) if at else None, "t": r["t"], "text": text.plain,
            "style": str(text.style or "")}  # fmt: skip


def _ended(child_end: dict[str, Any] | None) -> str:
    if child_end is None:
        return "in_progress"
    return "completed" if child_end["kind"] == "success" else str(child_end["kind"])
