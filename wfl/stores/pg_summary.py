"""A run's summary as PostgreSQL keeps it in wfl_runs.summary, rewritten at every append.

The summary is RunSummary.to_record(): its status (the dict of a run list's entry, SPEC §4)
and a few figures. Written whole, the status was ~60% of the bytes of the run's row, and the
row's new version is what each append's update writes to the WAL: the status's key names
(~150 bytes) and the id, workflow and state that the row's own columns hold. Schema 4 stores
the status as a list of the other values in to_dict's order (COMPACT), and rebuilds the dict
when it lists runs: the same dict, key for key and in the same order. A status whose keys are
not the ones known here (a field added to RunState.to_dict and not here) is stored whole, as
schema 3 stored every status, and read as it is: slower, never wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wfl import journal

if TYPE_CHECKING:
    from wfl.index import RunSummary

# RunState.to_dict(steps=False)'s keys in its order; "parent" only when the run has one, and
# "id", "workflow" and "state" are the row's columns
COMPACT = ("flow", "args", "result", "error", "created_at", "updated_at", "next_wake_at",
           "parent", "key", "deadline", "progress", "schedule", "scheduled_at",
           "continued_from", "continued_as")  # fmt: skip
_ORDER = ("id", "workflow", "flow", "state", *COMPACT[1:])
_WITHOUT_PARENT = tuple(k for k in _ORDER if k != "parent")


def pack(summary: RunSummary) -> bytes:
    """The summary's bytes for wfl_runs.summary."""
    record = summary.to_record()
    status: dict[str, Any] = record[0]
    keys = tuple(status)
    if keys in (_ORDER, _WITHOUT_PARENT):
        record[0] = [status.get(k) for k in COMPACT]  # (a parent is a run id, never None)
    return journal.pack(record)


def unpack(run_id: str, state: str, workflow: str, data: bytes) -> RunSummary:
    """The RunSummary of a row: its id, state and workflow columns and its summary bytes."""
    from wfl.index import RunSummary

    record = journal.decode(data, refuse_timestamps=False)
    values = record[0]
    if isinstance(values, list):  # (else a dict: schema 3's, or one with keys unknown here)
        given = dict(zip(COMPACT, values, strict=True))
        status = {"id": run_id, "workflow": workflow, "flow": given.pop("flow"), "state": state}
        if given["parent"] is None:
            del given["parent"]
        status.update(given)
        record[0] = status
    return RunSummary.from_record(run_id, record)
