"""A rebuildable summary of every run, so listing 10,000 runs does not read 10,000 journals.

`<dir>/index` maps run id -> ([journal mtime_ns, size], created_at, summary packed on its
own): a listing of the newest 50 of 10,000 runs orders them by created_at and unpacks only
those 50 summaries. An entry is trusted only while
the journal's mtime and size are unchanged; otherwise the journal is read again. The journals
stay the only source of truth: deleting the index loses nothing, and concurrent writers of the
index simply overwrite each other's (equally valid) caches.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from . import journal
from .errors import JournalCorrupt, RunNotFound
from .state import RunState
from .store import SUFFIX
from .store import FileStore as Store

INDEX_NAME = "index"
INDEX_FORMAT = 3  # 2: summaries carry the §8 keys (key, deadline, progress...); 3: packed each


@dataclass
class RunSummary:
    """What a run list needs of one run, without its steps."""

    id: str
    status: dict[str, Any]  # SPEC §4 keys, without "steps"
    created_at: float
    updated_at: float
    wake_at: float | None  # when a worker next has something to do (None: never / an event)
    steps_done: int
    steps_total: int
    current: str  # "3 send_email (scheduled)" or ""
    broken: bool = False

    def to_record(self) -> list[Any]:
        return [self.status, self.created_at, self.updated_at, self.wake_at, self.steps_done,
                self.steps_total, self.current, self.broken]  # fmt: skip

    @classmethod
    def from_record(cls, run_id: str, r: list[Any]) -> RunSummary:
        return cls(run_id, r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7])

    @classmethod
    def of(cls, state: RunState) -> RunSummary:
        current = ""
        step = state.current_step()
        if step is not None and not state.finished:
            current = f"{step.n} {step.name} ({step.display_state})"
        return cls(
            state.id,
            state.to_dict(steps=False),
            state.created_at,
            state.updated_at,
            state.next_wake_at(),
            sum(1 for s in state.steps.values() if s.finished),
            len(state.steps),
            current,
        )

    @classmethod
    def corrupt(cls, run_id: str, error: str, mtime: float) -> RunSummary:
        status = RunState(id=run_id, created_at=mtime, updated_at=mtime).to_dict(steps=False)
        status.update(state="failed", error=f"JournalCorrupt: {error}", next_wake_at=None)
        return cls(run_id, status, mtime, mtime, None, 0, 0, "", broken=True)


def summaries(store: Store, *, save: bool = True, newest: int | None = None) -> list[RunSummary]:
    """A summary of every run in the directory, reading only journals that changed.

    With `newest`, only the newest runs are returned, and only they are checked against
    their journals: a run's creation time never changes, so the cache orders them correctly,
    and runs it has not seen yet (new ones) are always looked at.
    """
    ids = store.run_ids()
    cache = _load(store)
    to_check = ids
    if newest is not None:
        unseen = [r for r in ids if r not in cache]
        seen = [r for r in ids if r in cache]
        seen.sort(key=lambda r: cache[r][1], reverse=True)  # [1]: created_at
        to_check = unseen + seen[:newest]
    fresh: dict[str, list[Any]] = {}
    out: list[RunSummary] = []
    changed = False
    for run_id in to_check:
        try:
            st = os.stat(store.dir / (run_id + SUFFIX))
        except FileNotFoundError:
            continue
        stamp = [st.st_mtime_ns, st.st_size]
        cached = cache.get(run_id)
        summary = _unpack(run_id, cached[2]) if cached is not None and cached[0] == stamp else None
        if summary is not None:
            fresh[run_id] = cached  # type: ignore[assignment]
        else:
            summary = _read(store, run_id, st.st_mtime)
            if summary is None:
                continue
            fresh[run_id] = [stamp, summary.created_at, journal.pack(summary.to_record())]
            changed = True
        out.append(summary)
    if newest is not None:
        out.sort(key=lambda s: s.created_at, reverse=True)
        out = out[:newest]
        present = set(ids)  # keep the entries not looked at this time
        fresh = {r: e for r, e in cache.items() if r in present} | fresh
    if save and (changed or len(fresh) != len(cache)):
        _save(store, fresh)
    return out


def _unpack(run_id: str, packed: Any) -> RunSummary | None:
    """A cached summary, or None if the entry does not read (then the journal is read)."""
    try:
        return RunSummary.from_record(run_id, journal.decode(packed, refuse_timestamps=False))
    except Exception:
        return None


def _read(store: Store, run_id: str, mtime: float) -> RunSummary | None:
    try:
        records = store.read(run_id)
    except RunNotFound:
        return None
    except JournalCorrupt as exc:  # (a journal without its run record, too)
        return RunSummary.corrupt(run_id, str(exc), mtime)
    return RunSummary.of(RunState.from_records(records))


def _load(store: Store) -> dict[str, Any]:
    try:
        data = (store.dir / INDEX_NAME).read_bytes()
        # our own cache, and its size makes the Timestamp walk costly: a stray Timestamp
        # would only be inert data, and any entry that does not fit is simply rebuilt
        decoded = journal.decode(data, refuse_timestamps=False)
    except Exception:
        return {}  # missing or unreadable: rebuild from the journals
    if not isinstance(decoded, dict) or decoded.get("format") != INDEX_FORMAT:
        return {}
    runs = decoded.get("runs")
    return runs if isinstance(runs, dict) else {}


def _save(store: Store, runs: dict[str, Any]) -> None:
    path = store.dir / INDEX_NAME
    tmp = store.dir / f".{INDEX_NAME}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):  # a read-only directory still lists, just slower
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(journal.encode({"format": INDEX_FORMAT, "runs": runs}))
        os.replace(tmp, path)  # a cache: no fsync, a torn one is just rebuilt
