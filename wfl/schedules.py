"""Schedules: cron slots become keyed starts. Cron parsing and time zones come from cronsim
and zoneinfo; this module only decides which slots to fire. Its only I/O is through the Store.

A schedule's `cursor` is the latest slot already dealt with (fired, skipped or given up on);
the slots after it up to now are due. Each slot's run has the key `schedule:NAME:<slot>`, so
when several workers fire the same slot the store keeps one run, and a worker that crashes
between starting a run and moving the cursor starts nothing twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .errors import InvalidArguments, RunNotFound, WflError

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from .clock import Clock
    from .manager import WorkflowDef
    from .stores.base import Store

log = logging.getLogger(__name__)

OVERLAP = ("skip", "allow")
CATCH_UP = ("last", "all", "none")
ON_TIME = 60.0  # a slot fired this late still counts as on time (catch-up "none")
MAX_CATCH_UP = 1000  # catch-up "all" fires at most this many missed slots per look
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")


def zone(name: str) -> ZoneInfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidArguments(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC"
        ) from None


def check_cron(expr: str) -> str:
    """The expression if cronsim accepts it; else one line naming the bad field."""
    from cronsim import CronSim, CronSimError

    if not isinstance(expr, str) or not expr.strip():
        raise InvalidArguments("--cron needs an expression such as '0 9 * * MON'")
    parts = expr.split()
    if len(parts) != 5:
        raise InvalidArguments(
            f"invalid cron expression {expr!r}: it has {len(parts)} fields, cron has 5 "
            f"({' '.join(FIELDS)})"
        )
    try:
        CronSim(expr, datetime.now(UTC))
    except CronSimError as exc:
        # cronsim says "Bad minute", "Bad day-of-week"...: name that field and its text
        reason = str(exc)
        for i, field in enumerate(FIELDS):
            if reason.lower() == f"bad {field}":
                raise InvalidArguments(
                    f"invalid cron expression {expr!r}: bad {field} field {parts[i]!r}"
                ) from None
        raise InvalidArguments(f"invalid cron expression {expr!r}: {reason}") from None
    return expr


def slots_after(expr: str, tz: str, after: float) -> Any:
    """Iterator over slot times (epoch seconds) strictly after `after`, in order."""
    from cronsim import CronSim

    for dt in CronSim(expr, datetime.fromtimestamp(after, zone(tz))):
        # started inside a fall-back night's second hour, cronsim may first answer with a
        # time of the first one (it looks at wall time, not fold): that slot is past
        if dt.timestamp() > after:
            yield dt.timestamp()


def next_slot(expr: str, tz: str, after: float) -> float:
    return float(next(iter(slots_after(expr, tz, after))))


def last_slot(expr: str, tz: str, at_or_before: float, *, since: float) -> float | None:
    """The latest slot in (since, at_or_before], or None.

    Forward iteration only (cronsim's reverse mode mistakes the second of two equal wall
    times on a fall-back night for the first), from a window before `at_or_before` that
    grows until it holds a slot, so a long downtime costs a few looks, not every slot."""
    for window in (3600.0, 86400.0, 32 * 86400.0, 367 * 86400.0, float("inf")):
        start = max(since, at_or_before - window)
        latest = None
        for slot in slots_after(expr, tz, start):
            if slot > at_or_before:
                break
            latest = slot
        if latest is not None or start == since:
            return latest
    return None


def slot_key(name: str, slot: float) -> str:
    """The idempotency key of one slot's run (UTC, so DST never makes two slots alike)."""
    stamp = datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"schedule:{name}:{stamp}"


def due_slots(sched: dict[str, Any], now: float) -> tuple[list[float], float | None]:
    """(slots to fire now, the new cursor) by the schedule's catch-up policy; the cursor is
    None when nothing is due."""
    expr, tz, cursor = sched["cron"], sched["tz"], float(sched["cursor"])
    latest = last_slot(expr, tz, now, since=cursor)
    if latest is None:
        return [], None
    policy = sched.get("catch_up", "last")
    if policy == "all":
        fire: list[float] = []
        for slot in slots_after(expr, tz, cursor):
            if slot > now or len(fire) >= MAX_CATCH_UP:
                break
            fire.append(slot)
        return fire, fire[-1]
    if policy == "none" and now - latest > ON_TIME:
        return [], latest  # missed while no worker ran: skip it
    return [latest], latest


@dataclass
class Fired:
    name: str
    slot: float
    run_id: str | None  # None: skipped (overlap)


def fire_due(store: Store, clock: Clock) -> tuple[list[Fired], float | None]:
    """Start the runs of every due slot of every active schedule. Returns what was fired
    and when the next slot of any schedule comes (None: no active schedule)."""
    fired: list[Fired] = []
    soonest: float | None = None
    for sched in store.schedules():
        if sched.get("paused"):
            continue
        try:
            fired += _fire_one(store, clock, sched)
            cursor = float(store.schedule(sched["name"])["cursor"])
            nxt = next_slot(sched["cron"], sched["tz"], max(cursor, clock.now()))
        except WflError as exc:  # a flow that no longer imports...: retried at the next look
            log.error("schedule %s: %s", sched["name"], exc)
            continue
        soonest = nxt if soonest is None else min(soonest, nxt)
    return fired, soonest


def _fire_one(store: Store, clock: Clock, sched: dict[str, Any]) -> list[Fired]:
    name = sched["name"]
    slots, cursor = due_slots(sched, clock.now())
    if cursor is None:
        return []
    fired = []
    for slot in slots:
        if sched.get("overlap", "skip") == "skip" and _running(store, sched.get("last_run")):
            log.info("schedule %s: slot %s skipped, the last run is still going", name, slot)
            fired.append(Fired(name, slot, None))
            continue
        run_id = start(store, clock, sched, slot, key=slot_key(name, slot))
        sched["last_run"] = run_id
        fired.append(Fired(name, slot, run_id))
    last_run = sched.get("last_run")

    def advance(current: dict[str, Any]) -> dict[str, Any]:
        if float(current["cursor"]) < cursor:  # never backwards: another worker got further
            current["cursor"] = cursor
            current["last_run"] = last_run
        return current

    store.update_schedule(name, advance)
    return fired


def start(
    store: Store, clock: Clock, sched: dict[str, Any], slot: float, *, key: str | None
) -> str:
    from . import ops

    return ops.create_run(
        store, clock, f"{sched['flow']}:{sched['workflow']}", dict(sched.get("args") or {}),
        key=key, schedule=sched["name"], scheduled_at=slot,
    )  # fmt: skip


def _running(store: Store, run_id: str | None) -> bool:
    """Whether the schedule's last run (or the run its chain continued as) is unfinished."""
    return _chain_state(store, run_id) == "in_progress"


def _chain_state(store: Store, run_id: str | None) -> str | None:
    """The state of the last run of `run_id`'s continue-as-new chain ("deleted" if gone)."""
    from . import ops

    state = None
    for _ in range(10_000):
        if run_id is None:
            break
        try:
            state = ops.read_state(store, run_id)
        except (RunNotFound, WflError):
            return "deleted"  # cleaned up or unreadable: it is not running
        run_id = state.continued_as
    return state.state if state is not None else None


def new_schedule(
    name: str,
    wf: WorkflowDef,
    flow: str,
    *,
    cron: str,
    tz: str,
    args: dict[str, Any],
    overlap: str,
    catch_up: str,
    now: float,
) -> dict[str, Any]:
    """A schedule's stored form, validated; its first slot is the first after `now`."""
    from .store import check_schedule_name

    check_schedule_name(name)
    check_cron(cron)
    zone(tz)
    if overlap not in OVERLAP:
        raise InvalidArguments(f"--overlap must be one of {', '.join(OVERLAP)}, not {overlap!r}")
    if catch_up not in CATCH_UP:
        raise InvalidArguments(f"--catch-up must be one of {', '.join(CATCH_UP)}, not {catch_up!r}")
    return {
        "name": name,
        "workflow": wf.name,
        "flow": flow,
        "cron": cron,
        "tz": tz,
        "args": args,
        "overlap": overlap,
        "catch_up": catch_up,
        "paused": False,
        "created_at": now,
        "cursor": now,
        "last_run": None,
    }


def describe(store: Store, sched: dict[str, Any], now: float) -> dict[str, Any]:
    """A schedule as `wfl schedule list --json` shows it."""
    from .clock import iso

    last_run = sched.get("last_run")
    last_state = _chain_state(store, last_run)  # a chain's state is its last run's
    nxt = None
    if not sched.get("paused"):
        nxt = iso(next_slot(sched["cron"], sched["tz"], max(float(sched["cursor"]), now)))
    return {
        "name": sched["name"],
        "workflow": sched["workflow"],
        "flow": sched["flow"],
        "cron": sched["cron"],
        "tz": sched["tz"],
        "args": sched.get("args") or {},
        "overlap": sched.get("overlap", "skip"),
        "catch_up": sched.get("catch_up", "last"),
        "paused": bool(sched.get("paused")),
        "next_fire_at": nxt,
        "last_run": last_run,
        "last_run_state": last_state,
    }
