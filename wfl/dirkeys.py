"""A journal directory's idempotency keys (SPEC §8): at most one run per key.

  keys/<sha256>.key     which run holds a key (created with link(), which fails if it
                        exists: one run per key, across processes)
  keys/<id>.pending     a keyed run's first journal, until its key is held

A keyed run is born in three durable moves: its journal is written under keys/ (not
yet a run: nothing lists it), the key file is link()ed into place (atomic, fails if
the key is held: this is where exactly one process wins), then the journal is renamed
into the directory. A crash between the last two leaves the key naming a pending
journal; whoever next asks for the key finishes the move. So a key never names a run
that cannot appear, and no process can see a run whose key another process holds. A key
that names a journal holding no record (a machine crash lost its write) names no run: the
next start with it makes a new run (unborn.py).

FileStore (wfl/store.py) takes these methods as a base class; the PostgreSQL store keeps its
keys in a table (wfl/stores/pg_extras.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from . import journal, unborn
from .dirschedules import write_new
from .errors import JournalWriteError
from .records import Record
from .runids import check_id, new_run_id


class KeyFiles:
    """The key methods of the Store protocol for a journal directory."""

    dir: Path

    def journal_path(self, run_id: str) -> Path:
        raise NotImplementedError  # FileStore's

    def key_path(self, key: str) -> Path:
        import hashlib  # (here: `wfl status` never needs it)

        return self.dir / "keys" / (hashlib.sha256(key.encode()).hexdigest() + ".key")

    def _pending_path(self, run_id: str) -> Path:
        return self.dir / "keys" / (check_id(run_id) + ".pending")

    def key_owner(self, key: str) -> str | None:
        """The run holding `key` (it may still be pending), or None."""
        try:
            data = journal.decode(self.key_path(key).read_bytes())
        except FileNotFoundError:
            return None
        if not isinstance(data, dict) or data.get("key") != key:
            raise JournalWriteError(f"key file {self.key_path(key)} is damaged: remove it")
        return str(data["run"])

    def run_for_key(self, key: str) -> str | None:
        """The id of the run holding `key`, or None if no run does."""
        owner = self.key_owner(key)
        return owner if owner is not None and self._settle(owner) else None

    def _create_keyed(
        self, make_records: Callable[[str], list[Record]], key: str, fixed: str | None = None
    ) -> str:
        """`fixed`: the run's id (wfl migrate: a run and its key move together; a run that
        is there already gets the key)."""
        keys = self.dir / "keys"
        path = self.key_path(key)
        for _ in range(100):
            owner = self.key_owner(key)
            if owner is not None:
                if self._settle(owner):
                    return owner
                self._drop_stale_key(key, owner)
                continue
            run_id = new_run_id() if fixed is None else fixed
            pending = self._pending_path(run_id)
            if fixed is not None:
                pending.unlink(missing_ok=True)  # left by a copy cut short
            if fixed is None or not self.journal_path(run_id).exists():
                journal.create(pending, make_records(run_id))
            tmp = keys / f".{run_id}.tmp"
            write_new(tmp, journal.encode({"key": key, "run": run_id}))
            try:
                os.link(tmp, path)
            except FileExistsError:
                pending.unlink(missing_ok=True)
                continue  # another process took the key first: its run is the run
            finally:
                tmp.unlink(missing_ok=True)
            journal.fsync_dir(keys)
            self._settle(run_id, made=True)
            return run_id
        raise JournalWriteError(f"could not settle key {key!r}: the keys directory keeps changing")

    def _settle(self, run_id: str, *, made: bool = False) -> bool:
        """Make sure the run a key names is in the directory; False if it is gone, or is no
        run: a journal that holds no record (a crash; never one being made, as a key is
        linked after its journal is synced: unborn.py). `made`: this process just wrote
        the journal whole (nothing to look at)."""
        path = self.journal_path(run_id)
        if not path.exists():
            with contextlib.suppress(FileNotFoundError):  # another process may move it first
                os.rename(self._pending_path(run_id), path)
                journal.fsync_dir(self.dir)
        return path.exists() if made else bool(unborn.started(path))

    def _drop_stale_key(self, key: str, owner: str) -> None:
        """The key names a run that was deleted (by hand: cleanup frees keys first)."""
        if self.key_owner(key) == owner and not self._settle(owner):
            self.key_path(key).unlink(missing_ok=True)

    def free_key(self, key: str, run_id: str) -> None:
        """Release `key` if `run_id` holds it (cleanup: a later start gets a new run)."""
        with contextlib.suppress(JournalWriteError):
            if self.key_owner(key) == run_id:
                self.key_path(key).unlink(missing_ok=True)
