"""A journal directory's schedules (SPEC §8): one file per schedule, replaced whole.

  schedules/<name>.schedule   a schedule (0600), written to a temporary name and linked or
                              renamed into place, under schedules/<name>.lock

FileStore (wfl/store.py) takes these methods as a base class; the PostgreSQL store keeps its
schedules in a table (wfl/stores/pg_extras.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import journal
from .errors import InvalidArguments, ScheduleExists, ScheduleNotFound

_SCHEDULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_schedule_name(name: str) -> str:
    if not isinstance(name, str) or not _SCHEDULE_NAME.match(name):
        raise InvalidArguments(
            f"invalid schedule name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 100, starting with a letter or digit)"
        )
    return name


class ScheduleFiles:
    """The schedule methods of the Store protocol for a journal directory."""

    dir: Path

    def ensure(self) -> None:
        raise NotImplementedError  # FileStore's

    def _schedule_path(self, name: str) -> Path:
        return self.dir / "schedules" / (check_schedule_name(name) + ".schedule")

    def add_schedule(self, data: dict[str, Any]) -> None:
        """Store a new schedule; ScheduleExists if the name is taken."""
        name = check_schedule_name(data["name"])  # before the name goes into any path
        self.ensure()
        tmp = self.dir / "schedules" / f".{name}.{os.getpid()}.tmp"
        write_new(tmp, journal.encode(data))
        try:
            os.link(tmp, self._schedule_path(name))
        except FileExistsError:
            raise ScheduleExists(name) from None
        finally:
            tmp.unlink(missing_ok=True)
        journal.fsync_dir(self.dir / "schedules")

    def schedules(self) -> list[dict[str, Any]]:
        try:
            names = sorted(os.listdir(self.dir / "schedules"))
        except FileNotFoundError:
            return []
        found = []
        for n in names:
            if n.endswith(".schedule"):
                with contextlib.suppress(ScheduleNotFound):  # removed while we listed
                    found.append(self.schedule(n[: -len(".schedule")]))
        return found

    def schedule(self, name: str) -> dict[str, Any]:
        try:
            data = journal.decode(self._schedule_path(name).read_bytes())
        except FileNotFoundError:
            raise ScheduleNotFound(name) from None
        return dict(data)

    def update_schedule(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        """Read-modify-write one schedule under its lock; `change` returns the new content
        (None: leave it). Returns what is stored afterwards."""
        with self._schedule_lock(name):
            current = self.schedule(name)
            new = change(dict(current))
            if new is None or new == current:
                return current
            tmp = self.dir / "schedules" / f".{name}.{os.getpid()}.tmp"
            write_new(tmp, journal.encode(new))
            os.replace(tmp, self._schedule_path(name))
            journal.fsync_dir(self.dir / "schedules")
            return new

    def remove_schedule(self, name: str) -> None:
        with self._schedule_lock(name):
            try:
                self._schedule_path(name).unlink()
            except FileNotFoundError:
                raise ScheduleNotFound(name) from None
        # the lock file stays: deleting it could let two writers lock different files

    @contextlib.contextmanager
    def _schedule_lock(self, name: str) -> Iterator[None]:
        if not self._schedule_path(name).exists():
            raise ScheduleNotFound(name)
        fd = os.open(self.dir / "schedules" / (name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def write_new(path: Path, data: bytes) -> None:
    """Write a small private file durably (0600); `path` is a temporary name of ours."""
    path.unlink(missing_ok=True)  # a leftover of a crashed writer with our pid
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
