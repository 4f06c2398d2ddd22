"""What workers know about the code they load, left in the journal directory for
`wfl status RUN --why`: workflows a worker could not load (and why), and workers that keep
running code older than the files on disk.

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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FlowLoadError

if TYPE_CHECKING:
    from .manager import WorkflowDef
    from .state import RunState

UNLOADABLE = "unloadable"


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


def note_unloadable(
    directory: Path | None, flow: str, module: str, workflow: str, reason: str, at: float
) -> None:
    if directory is None:
        return  # a store without notes (PostgreSQL, for now): the log still says it
    folder = directory / UNLOADABLE
    path = folder / _key(flow, workflow)
    old = _read(path)
    if old is not None and old.get("reason") == reason:
        return  # retried every so often: write only what is new
    with contextlib.suppress(OSError):  # a read-only directory: the log still says it
        folder.mkdir(mode=0o700, exist_ok=True)
        value = {"flow": flow, "module": module, "workflow": workflow, "reason": reason,
                 "pid": os.getpid(), "at": at}  # fmt: skip
        _write(path, value, tmp_dir=folder)


def clear_unloadable(directory: Path | None, flow: str, workflow: str) -> None:
    if directory is None:
        return
    with contextlib.suppress(OSError):
        (directory / UNLOADABLE / _key(flow, workflow)).unlink(missing_ok=True)


def unloadable(directory: Path | None, flow: str, workflow: str) -> dict[str, Any] | None:
    if directory is None:
        return None
    return _read(directory / UNLOADABLE / _key(flow, workflow))


def publish_changed(directory: Path | None, token: str, changed: list[str]) -> None:
    """Say in a live worker's marker which of its loaded files changed since it loaded them."""
    if directory is None:
        return
    marker = directory / "workers" / token
    if not token or not marker.exists():
        return  # not listening, or already deregistered: nobody to speak for
    with contextlib.suppress(OSError):
        _write(marker, {"pid": os.getpid(), "changed": changed}, tmp_dir=directory)


def stale_workers(directory: Path | None) -> list[dict[str, Any]]:
    if directory is None:
        return []
    """Live workers' reports of code changed under them (markers are small, and few)."""
    found = []
    try:
        tokens = os.listdir(directory / "workers")
    except OSError:
        return []
    for token in tokens:
        info = _read(directory / "workers" / token)
        if info and info.get("changed"):
            found.append(info)
    return found


def load_for_run(directory: Path | None, state: RunState, now: float) -> WorkflowDef:
    """A run's workflow (SPEC §7: its module on this process's import path first, then its
    recorded file); a failure is left for `status --why` until some worker loads it."""
    from .loader import load_run_workflow

    try:
        wf = load_run_workflow(state.flow, state.module, state.workflow)
    except FlowLoadError as exc:
        if directory is not None:
            note_unloadable(directory, state.flow, state.module, state.workflow, str(exc), now)
        raise
    if directory is not None:
        clear_unloadable(directory, state.flow, state.workflow)
    return wf
