"""The directory of runs: journal paths, run ids, leases, listing, deletion, wake-ups.

Layout of a wfl directory (0700):
  <id>.journal          one run's journal (0600) — the only source of truth
  locks/<id>.lock       lease: held by the one worker driving the run
  workers/<token>       one file per live worker; its wake-up socket is named after it
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

from . import journal
from .errors import AmbiguousRunId, InvalidRunId, JournalCorrupt, JournalWriteError, RunNotFound
from .records import Record

DIR_MODE = 0o700
SUFFIX = ".journal"
_ID = re.compile(r"^[0-9a-z]{1,64}$")
ID_LENGTH = 12
NOTIFY_TIMEOUT = 0.5  # seconds to wait for a busy worker's wake-up queue


def default_dir() -> Path:
    return Path(os.environ.get("WFL_DIR") or ".wfl")


def new_run_id() -> str:
    return os.urandom(ID_LENGTH // 2).hex()  # (the secrets module costs `wfl start` 8 ms)


def is_run_id(name: str) -> bool:
    return bool(_ID.match(name))


def check_id(run_id: str) -> str:
    """A run id (or prefix) that is safe to put in a path, else InvalidRunId."""
    if not isinstance(run_id, str) or not _ID.match(run_id):
        raise InvalidRunId(str(run_id))
    return run_id


class Store:
    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(directory) if directory is not None else default_dir()
        self.dir = self.dir.absolute()

    # -- layout ----------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the directory tree (0700) if missing."""
        for d in (self.dir, self.dir / "locks", self.dir / "workers"):
            try:
                d.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalWriteError(f"cannot create directory {d}: {exc.strerror}") from None

    def journal_path(self, run_id: str) -> Path:
        return self.dir / (check_id(run_id) + SUFFIX)

    def lock_path(self, run_id: str) -> Path:
        return self.dir / "locks" / (check_id(run_id) + ".lock")

    def exists(self, run_id: str) -> bool:
        return self.journal_path(run_id).exists()

    # -- runs ------------------------------------------------------------------------------

    def create_run(
        self, make_records: Callable[[str], list[Record]], *, run_id: str | None = None
    ) -> str:
        """Create a journal under a fresh id (or `run_id`, if that run does not exist yet);
        `make_records(run_id)` gives its first records."""
        self.ensure()
        if run_id is not None:
            try:
                journal.create(self.journal_path(run_id), make_records(run_id))
            except FileExistsError:
                pass
            return run_id
        while True:
            run_id = new_run_id()
            try:
                journal.create(self.journal_path(run_id), make_records(run_id))
                return run_id
            except FileExistsError:
                continue  # 48 random bits collided: draw again

    def run_ids(self) -> list[str]:
        """Every run in the directory. A `*.journal` file whose name is not a run id (a
        backup copy, say) is not a run: it is left alone (see stray_files)."""
        return self._journal_names()[0]

    def stray_files(self) -> list[str]:
        """Names of `*.journal` files that are not runs (their name is not a run id)."""
        return self._journal_names()[1]

    def _journal_names(self) -> tuple[list[str], list[str]]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return [], []
        ids: list[str] = []
        stray: list[str] = []
        for name in names:
            if name.endswith(SUFFIX):
                stem = name[: -len(SUFFIX)]
                if _ID.match(stem):
                    ids.append(stem)
                else:
                    stray.append(name)
        return ids, sorted(stray)

    def resolve(self, prefix: str) -> str:
        """The one run id starting with `prefix` (git-style abbreviation)."""
        check_id(prefix)
        if self.journal_path(prefix).exists():
            return prefix
        matches = [r for r in self.run_ids() if r.startswith(prefix)]
        if not matches:
            raise RunNotFound(prefix)
        if len(matches) > 1:
            raise AmbiguousRunId(prefix, matches)
        return matches[0]

    def read(self, run_id: str) -> list[Record]:
        """The run's records; JournalCorrupt if they do not start with the run record."""
        path = self.journal_path(run_id)
        try:
            records = journal.read(path).records
        except FileNotFoundError:
            raise RunNotFound(run_id) from None
        check_history(records, path)
        return records

    def delete(self, run_id: str) -> None:
        self.journal_path(run_id).unlink(missing_ok=True)
        self.lock_path(run_id).unlink(missing_ok=True)

    # -- leases ----------------------------------------------------------------------------

    def try_lease(self, run_id: str) -> Lease | None:
        """The run's lease if no other worker holds it, else None. Released on process death."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.lock_path(run_id)), timeout=0, mode=0o600)
        try:
            lock.acquire()
        except Timeout:
            return None
        return Lease(lock)

    def is_leased(self, run_id: str) -> bool:
        lease = self.try_lease(run_id)
        if lease is None:
            return True
        lease.release()
        return False

    # -- wake-ups: workers listen on abstract unix datagram sockets -----------------------

    def worker_tokens(self) -> Iterator[str]:
        try:
            yield from os.listdir(self.dir / "workers")
        except FileNotFoundError:
            return

    def notify(self, run_id: str, *, skip: str = "") -> None:
        """Tell every live worker (but `skip`) that `run_id` has news (new run, cancel...)."""
        tokens = [t for t in self.worker_tokens() if t != skip]
        if not tokens:
            return
        import _socket  # the C module: `socket` adds ~4 ms of enum set-up to `wfl start`

        message = run_id.encode()
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
        try:
            # A worker's queue holds only ~10 datagrams: when a burst of starts fills it, wait
            # briefly for it to drain rather than drop the news (the run would wait for the
            # next rescan).
            sock.settimeout(NOTIFY_TIMEOUT)
            for token in tokens:
                try:
                    sock.sendto(message, socket_address(token))
                except (ConnectionRefusedError, FileNotFoundError):
                    (self.dir / "workers" / token).unlink(missing_ok=True)  # worker is gone
                except OSError:
                    pass  # stuck: it will find the run at its next rescan
        finally:
            sock.close()


def check_history(records: list[Record], path: Path) -> None:
    """A run's journal starts with its run record. Journals are created whole (see
    journal.create), so one without it is no run being created: it is broken (left empty by
    a crash of an older wfl, or cut by hand) and is reported, cleaned up, never driven."""
    if not records or records[0].get("t") != "run":
        raise JournalCorrupt(str(path), 0, "it holds no run record (its creation was cut short)")


def socket_address(token: str) -> str:
    return "\0wfl-worker-" + token


class Lease:
    def __init__(self, lock: object) -> None:
        self._lock = lock

    def release(self) -> None:
        self._lock.release()  # type: ignore[attr-defined]
