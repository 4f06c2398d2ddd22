"""What workers know about the code they load, left in the store's notes (Store.notes: files
in the journal directory, a table in PostgreSQL) for `wfl status RUN --why`: workflows a worker
could not load (and why), and workers that keep running code older than the files on disk.
In a directory:

  unloadable/<key>   {"flow", "module", "workflow", "reason", "pid", "at"}: one per workflow a
                     worker failed to load; removed when a worker loads it
  workers/<token>    a live worker's marker; a worker whose loaded code changed on disk writes
                     {"pid", "changed": [files]} into it
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FlowLoadError

if TYPE_CHECKING:
    from .manager import WorkflowDef
    from .state import RunState
    from .stores.base import Notes

UNLOADABLE = "unloadable"
WORKERS = "workers"


def _key(flow: str, workflow: str) -> str:
    return hashlib.sha1(f"{flow}\0{workflow}".encode()).hexdigest()[:20]


def _write(path: Path, value: Any, *, tmp_dir: Path) -> None:
    """Replace `path` whole (readers never see half a document)."""
    tmp = tmp_dir / f".{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            text = f.read(65536)
    except OSError:
        return None
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class DirNotes:
    """Notes as small files in the journal directory (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        return _read(self.dir / kind / key)

    def put(self, kind: str, key: str, value: dict[str, Any]) -> None:
        folder = self.dir / kind
        if kind == WORKERS and not (folder / key).exists():
            return  # not listening, or already deregistered: nobody to speak for
        with contextlib.suppress(OSError):  # a read-only directory: the log still says it
            folder.mkdir(mode=0o700, exist_ok=True)
            _write(folder / key, value, tmp_dir=folder)

    def delete(self, kind: str, key: str) -> None:
        with contextlib.suppress(OSError):
            (self.dir / kind / key).unlink(missing_ok=True)

    def all(self, kind: str) -> list[dict[str, Any]]:
        try:
            names = os.listdir(self.dir / kind)
        except OSError:
            return []
        found = (_read(self.dir / kind / name) for name in names if not name.startswith("."))
        return [note for note in found if note is not None]


def note_unloadable(
    notes: Notes | None, flow: str, module: str, workflow: str, reason: str, at: float
) -> None:
    _cleared.pop((flow, workflow), None)  # (its next good load clears it at once)
    if notes is None:
        return  # a store without notes: the log still says it
    key = _key(flow, workflow)
    old = notes.get(UNLOADABLE, key)
    if old is not None and old.get("reason") == reason:
        return  # retried every so often: write only what is new
    value = {"flow": flow, "module": module, "workflow": workflow, "reason": reason,
             "pid": os.getpid(), "at": at}  # fmt: skip
    notes.put(UNLOADABLE, key, value)


# A run's load clears its workflow's note; once per CLEAR_EVERY seconds per workflow in a
# process (a note another worker writes meanwhile stays that long): an unlink per load was a
# syscall on the path of every pick-up and every timer of an evicted run.
CLEAR_EVERY = 5.0
_cleared: dict[tuple[str, str], float] = {}


def clear_unloadable(notes: Notes | None, flow: str, workflow: str) -> None:
    if notes is None:
        return
    now = time.monotonic()
    if now - _cleared.get((flow, workflow), -CLEAR_EVERY) < CLEAR_EVERY:
        return
    if len(_cleared) > 10_000:  # (a bound, not a cache policy)
        _cleared.clear()
    _cleared[(flow, workflow)] = now
    notes.delete(UNLOADABLE, _key(flow, workflow))


def unloadable(notes: Notes | None, flow: str, workflow: str) -> dict[str, Any] | None:
    return None if notes is None else notes.get(UNLOADABLE, _key(flow, workflow))


def publish_changed(notes: Notes | None, token: str, changed: list[str]) -> None:
    """Say in a live worker's marker which of its loaded files changed since it loaded them."""
    if notes is not None and token:
        notes.put(WORKERS, token, {"pid": os.getpid(), "changed": changed})


def stale_workers(notes: Notes | None) -> list[dict[str, Any]]:
    """Live workers' reports of code changed under them (markers are small, and few)."""
    if notes is None:
        return []
    return [info for info in notes.all(WORKERS) if info.get("changed")]


def load_for_run(notes: Notes | None, state: RunState, now: float) -> WorkflowDef:
    """A run's workflow (SPEC §7: its module on this process's import path first, then its
    recorded file); a failure is left for `status --why` until some worker loads it."""
    from .loader import load_run_workflow

    try:
        wf = load_run_workflow(state.flow, state.module, state.workflow)
    except FlowLoadError as exc:
        note_unloadable(notes, state.flow, state.module, state.workflow, str(exc), now)
        raise
    clear_unloadable(notes, state.flow, state.workflow)
    return wf
