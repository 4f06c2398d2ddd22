"""A rebuildable summary of every run, so listing 10,000 runs does not read 10,000 journals.

`<dir>/index` holds, per run, the journal's [mtime_ns, size] when it was summarized, the run's
created_at and its summary (msgpack, packed on its own). An entry is trusted only while the
journal's mtime and size are unchanged; otherwise the journal is read again. The journals
stay the only source of truth: deleting the index loses nothing, and concurrent writers of the
index simply overwrite each other's (equally valid) caches.

The file is laid out for `wfl status` (the newest 50 of 10,000 runs): a small head of columns
(ids, stamps, created_at, where each summary ends) and then every summary back to back. The
newest runs are found from the head alone and only their summaries are unpacked; a listing of
every run unpacks the summaries in one pass (msgpack's stream reader). Decoding a per-run
structure instead cost ~12 ms of the ~200 ms budget for 10,000 runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import indexfile, journal, jsonout
from .errors import InvalidArguments, JournalCorrupt, RunNotFound
from .indexfile import Cache
from .store import SUFFIX

if TYPE_CHECKING:
    from .state import RunState
    from .stores.base import Store

STATES = ("in_progress", "completed", "failed", "canceled")


def check_filters(state: str | None, limit: int | None) -> None:
    if state is not None and state not in STATES:
        raise InvalidArguments(f"state must be one of {', '.join(STATES)}, not {state!r}")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise InvalidArguments(f"limit must be a whole number of runs, 1 or more, not {limit!r}")


class RunSummary:
    """What a run list needs of one run, without its steps. (A plain class: importing
    dataclasses, which imports inspect, costs `wfl status` ~8 ms.)"""

    __slots__ = ("broken", "created_at", "current", "id", "status", "steps_done",
                 "steps_total", "updated_at", "wake_at")  # fmt: skip

    def __init__(
        self,
        id: str,
        status: dict[str, Any],  # SPEC §4 keys, without "steps"
        created_at: float,
        updated_at: float,
        wake_at: float | None,  # when a worker next has something to do (None: never / an event)
        steps_done: int,
        steps_total: int,
        current: str,  # "3 send_email (scheduled)" or ""
        broken: bool = False,
    ) -> None:
        self.id, self.status, self.created_at, self.updated_at = id, status, created_at, updated_at
        self.wake_at, self.steps_done, self.steps_total = wake_at, steps_done, steps_total
        self.current, self.broken = current, broken

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RunSummary):
            return NotImplemented
        return self.id == other.id and self.to_record() == other.to_record()

    __hash__ = None  # type: ignore[assignment]  # (mutable, as the dataclass it was)

    def __repr__(self) -> str:
        return f"RunSummary(id={self.id!r}, state={self.status.get('state')!r})"

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
        from .state import RunState

        status = RunState(id=run_id, created_at=mtime, updated_at=mtime).to_dict(steps=False)
        status.update(state="failed", error=f"JournalCorrupt: {error}", next_wake_at=None)
        return cls(run_id, status, mtime, mtime, None, 0, 0, "", broken=True)


def listed(
    store: Store, *, state: str | None = None, workflow: str | None = None,
    limit: int | None = None,
) -> list[RunSummary]:  # fmt: skip
    """Client.list's runs as summaries: newest first, filtered (only changed journals are
    read)."""
    check_filters(state, limit)
    newest = limit if state is None and workflow is None else None
    return _filtered(store.summaries(newest=newest), state, workflow, limit)


def _filtered(
    found: list[RunSummary], state: str | None, workflow: str | None, limit: int | None
) -> list[RunSummary]:
    if state is not None or workflow is not None:
        found = [
            s
            for s in found
            if (state is None or s.status["state"] == state)
            and (workflow is None or s.status["workflow"] == workflow)
        ]
    found.sort(key=lambda s: s.created_at, reverse=True)
    return found[:limit] if limit is not None else found


def survey(
    store: Any,
    *,
    state: str | None,
    workflow: str | None,
    limit: int | None,
    on_stray: Callable[[list[str]], None],
) -> tuple[list[RunSummary], int]:
    """What `wfl status` lists: the runs as `listed` gives them and how many match in all
    (for "N more"); `on_stray` is told the stray `*.journal` names first. A journal
    directory is listed once for all three."""
    check_filters(state, limit)
    filtered = state is not None or workflow is not None
    newest = None if filtered else limit
    ids = _ids(store, on_stray)
    if ids is None:
        found = store.summaries(newest=newest)
        count = 0 if filtered else len(store.run_ids())
    else:
        unborn: list[str] = []  # journals without a record: no runs, not counted
        found = _collect(store, newest=newest, ids=ids, save=True, as_json=False, skip=unborn)
        count = len(ids) - len(unborn)
    matching = _filtered(found, state, workflow, None)
    total = len(matching) if filtered else count
    return (matching[:limit] if limit is not None else matching), total


def survey_json(store: Any, *, limit: int | None, on_stray: Callable[[list[str]], None]) -> str:
    """`wfl status --json` (without filters): the JSON text of the list, each run's from the
    index when its journal did not change (no summary is decoded, no JSON encoded)."""
    check_filters(None, limit)
    ids = _ids(store, on_stray)
    if ids is None:
        texts = [json_of(s.status) for s in _filtered(store.summaries(newest=limit),
                                                       None, None, limit)]  # fmt: skip
    else:
        texts = _collect(store, newest=limit, ids=ids, save=True, as_json=True)
    return "[\n  " + ",\n  ".join(texts) + "\n]" if texts else "[]"


def json_of(status: dict[str, Any]) -> str:
    """A run's status as it stands in an indented JSON list (`print_json` of the list)."""
    return jsonout.dumps(status, indent=2).replace("\n", "\n  ")


def _ids(store: Any, on_stray: Callable[[list[str]], None]) -> list[str] | None:
    """A journal directory's run ids, its stray names told first (None: not a directory)."""
    from .store import FileStore

    if not isinstance(store, FileStore):
        on_stray(store.stray_files())
        return None
    names = store._names()
    on_stray(store.stray_files(names))
    return store.run_ids(names)


def summaries(
    store: Any, *, save: bool = True, newest: int | None = None, ids: list[str] | None = None
) -> list[RunSummary]:
    """A summary of every run in the directory (`ids`: its runs, if already listed), reading
    only journals that changed.

    With `newest`, only the newest runs are returned, and only they are checked against
    their journals: a run's creation time never changes, so the cache orders them correctly,
    and runs it has not seen yet (new ones) are always looked at.
    """
    if ids is None:
        ids = store.run_ids()
    return _collect(store, newest=newest, ids=ids, save=save, as_json=False)


Fresh = tuple[int, int, float, bytes, bytes]  # an entry: mtime_ns, size, created, summary, JSON


def _collect(
    store: Any, *, newest: int | None, ids: list[str], save: bool, as_json: bool,
    skip: list[str] | None = None,
) -> list[Any]:  # fmt: skip
    """summaries(), or with as_json each run's json_of() in the same order. `skip` is given
    the ids of the journals that are no runs (unborn.py: never in the index, always read)."""
    cache = indexfile.load(store)
    skip = [] if skip is None else skip
    try:
        return _collect_from(cache, store, newest=newest, ids=ids, save=save, as_json=as_json,
                             skip=skip)  # fmt: skip
    finally:
        cache.close()


def _collect_from(
    cache: Cache, store: Any, *, newest: int | None, ids: list[str], save: bool, as_json: bool,
    skip: list[str],
) -> list[Any]:  # fmt: skip
    pos = cache.positions()
    to_check = ids
    if newest is not None:
        unseen = [r for r in ids if r not in pos]
        created = cache.created
        seen = sorted((r for r in ids if r in pos), key=lambda r: created[pos[r]], reverse=True)
        to_check = unseen + seen[:newest]
    trusted: list[tuple[str, int]] = []  # (run id, its place in the cache)
    fresh: dict[str, Fresh] = {}
    read: list[RunSummary] = []
    stat = os.stat
    try:
        fd = os.open(store.dir, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return []  # no directory, no runs (whatever was listed is gone)
    try:
        for run_id in to_check:
            try:
                st = stat(run_id + SUFFIX, dir_fd=fd)
            except FileNotFoundError:
                continue
            i = pos.get(run_id)
            if i is not None and cache.mtime[i] == st.st_mtime_ns and cache.size[i] == st.st_size:
                trusted.append((run_id, i))
                continue
            summary = _read(store, run_id, st.st_mtime)
            if summary is not None:
                read.append(summary)
                fresh[run_id] = _entry(st, summary)
            else:
                skip.append(run_id)
    finally:
        os.close(fd)
    out: list[tuple[float, Any]] = []
    if as_json:
        texts = cache.texts(None if newest is None else [i for _, i in trusted])
        for run_id, i in trusted:
            text = texts[i]
            if not text.startswith(f'{{\n    "id": "{run_id}"'):  # (the first key: SPEC §4)
                summary = _cached(store, cache, run_id, i, None, fresh)
                if summary is None:
                    continue
                text = json_of(summary.status)
            out.append((cache.created[i], text))
        out.extend((s.created_at, fresh[s.id][4].decode()) for s in read)
    else:
        unpacked = cache.unpack_all() if newest is None else None
        for run_id, i in trusted:
            summary = _cached(store, cache, run_id, i, unpacked, fresh)
            if summary is not None:
                out.append((summary.created_at, summary))
        out.extend((s.created_at, s) for s in read)
    if newest is not None or as_json:  # (summaries of every run: the caller sorts them)
        out.sort(key=_first, reverse=True)
        out = out[:newest]
    if skip:
        skipped = set(skip)
        ids = [r for r in ids if r not in skipped]
    if save and (fresh or len(pos) != len(ids) or not set(ids) <= pos.keys()):
        indexfile.save(store, cache, ids, fresh)
    return [item for _, item in out]


def _first(pair: tuple[float, Any]) -> float:
    return pair[0]


def _entry(st: os.stat_result, summary: RunSummary) -> Fresh:
    return (st.st_mtime_ns, st.st_size, summary.created_at, journal.pack(summary.to_record()),
            json_of(summary.status).encode())  # fmt: skip


def _cached(
    store: Any, cache: Cache, run_id: str, i: int, unpacked: list[Any] | None,
    fresh: dict[str, Fresh],
) -> RunSummary | None:  # fmt: skip
    """The cache's summary of a run, or if that does not read as this run's, its journal's."""
    record = unpacked[i] if unpacked is not None else cache.unpack(i)
    try:
        if record[0]["id"] == run_id:
            return RunSummary.from_record(run_id, record)
    except Exception:
        pass
    try:
        st = os.stat(store.dir / (run_id + SUFFIX))
    except FileNotFoundError:
        return None
    summary = _read(store, run_id, st.st_mtime)
    if summary is not None:
        fresh[run_id] = _entry(st, summary)
    return summary


def _read(store: Any, run_id: str, mtime: float) -> RunSummary | None:
    from .state import RunState

    try:
        records = store.read(run_id)
    except RunNotFound:
        return None
    except JournalCorrupt as exc:  # (a journal without its run record, too)
        return RunSummary.corrupt(run_id, str(exc), mtime)
    return RunSummary.of(RunState.from_records(records))
