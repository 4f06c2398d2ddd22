"""The journal directory store (the embedded default): journal paths, run ids, leases,
listing, deletion, wake-ups. Implements the Store protocol of `wfl.stores.base`.

Layout of a wfl directory (0700):
  <id>.journal          one run's journal (0600) — the only source of truth
  locks/<id>.lock       lease where Linux OFD locks are missing (elsewhere the lease is a
                        lock on a byte range of the journal itself: wfl/leases.py)
  workers/<token>       one file per live worker; its wake-up socket is named after it
  keys/<sha256>.key     an idempotency key (0600): which run holds it (created with link(),
                        which fails if it exists: one run per key, across processes)
  keys/<id>.pending     a keyed run's first journal, until its key is held (see create_run)
  schedules/<name>.schedule   a schedule (0600), replaced whole (write + rename) under
                        schedules/<name>.lock (wfl/dirschedules.py)
  watchers/<token>      the same for listeners that are not workers (a UI)
  pool/<random>         files holding a journal header, kept ready by a worker; a start
                        takes one instead of creating an inode (wfl/pool.py); no run
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import datagrams, journal, leases, unborn
from .datagrams import DatagramListener
from .datagrams import socket_address as socket_address  # its old home
from .dirkeys import KeyFiles
from .dirschedules import ScheduleFiles
from .dirschedules import check_schedule_name as check_schedule_name  # its old home
from .errors import AmbiguousRunId, JournalCorrupt, JournalWriteError, RunNotFound, RunNotStarted
from .records import Record
from .runids import ID_LENGTH as ID_LENGTH  # its old home
from .runids import RUN_ID as _ID
from .runids import check_id as check_id
from .runids import is_run_id as is_run_id
from .runids import new_run_id as new_run_id

if TYPE_CHECKING:
    from .codestate import DirNotes
    from .dirwatch import VersionWatch
    from .index import RunSummary

DIR_MODE = 0o700
SUFFIX = ".journal"
# a run journal's name among names joined by NUL (the one byte no file name holds)
_RUN_JOURNAL = re.compile(r"(?:\A|(?<=\x00))([0-9a-z]{1,64})\.journal(?=\x00|\Z)")


def default_dir() -> Path:
    return Path(os.environ.get("WFL_DIR") or ".wfl")


class FileStore(KeyFiles, ScheduleFiles):
    """Runs as journal files in one directory, on one machine (several workers may share it)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(directory) if directory is not None else default_dir()
        self.dir = self.dir.absolute()
        # run id -> the lease this store holds on its journal (its writer adopts the fd)
        self._held: dict[str, leases.JournalLease] = {}
        self._ensured = False  # ensure() made the tree once (a start need not stat it again)
        self._announced: str | None = None  # a new run whose news went out (see _announce)
        self._notes: DirNotes | None = None

    @property
    def spec(self) -> str:
        return str(self.dir)

    io_threads = 8

    @property
    def notes_dir(self) -> Path:
        return self.dir

    @property
    def notes(self) -> DirNotes:
        notes = self._notes
        if notes is None:  # (made once: every run's load asks for it)
            from .codestate import DirNotes

            notes = self._notes = DirNotes(self.dir)
        return notes

    def close(self) -> None:
        pass  # nothing held between calls

    # -- layout ----------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the directory tree (0700) if missing."""
        # (no locks/: leases lock the journals; the fallback makes locks/ when it needs it)
        for d in (self.dir, self.dir / "workers", self.dir / "keys", self.dir / "schedules"):
            try:
                d.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalWriteError(f"cannot create directory {d}: {exc.strerror}") from None
        self._ensured = True

    def journal_path(self, run_id: str) -> Path:
        return self.dir / (check_id(run_id) + SUFFIX)

    def lock_path(self, run_id: str) -> Path:
        return self.dir / "locks" / (check_id(run_id) + ".lock")

    def exists(self, run_id: str) -> bool:
        return self.journal_path(run_id).exists()

    # -- runs ------------------------------------------------------------------------------

    def create_run(
        self,
        make_records: Callable[[str], list[Record]],
        *,
        run_id: str | None = None,
        key: str | None = None,
    ) -> str:
        """Create a journal under a fresh id (or `run_id`, if that run does not exist yet);
        `make_records(run_id)` gives its first records. With `key`: if a run holds the key,
        create nothing and return that run's id."""
        if not self._ensured:
            self.ensure()
        try:
            return self._create(make_records, run_id, key)
        except JournalWriteError:
            if self.dir.is_dir() and (self.dir / "keys").is_dir():
                raise
            self.ensure()  # the tree went away since this store made it
            return self._create(make_records, run_id, key)

    def _create(
        self, make_records: Callable[[str], list[Record]], run_id: str | None, key: str | None
    ) -> str:
        if key is not None:
            return self._create_keyed(make_records, key, run_id)
        if run_id is not None:
            path = self.journal_path(run_id)
            try:
                journal.create(path, make_records(run_id))
            except FileExistsError:
                if unborn.started(path) is False:  # a crash cut this same creation short
                    unborn.replace(path, make_records(run_id))
            return run_id
        self._announced = None
        while True:
            run_id = new_run_id()  # (a valid id: its path without check_id or pathlib)
            try:  # (the file from the pool a worker keeps, if there is one: wfl/pool.py)
                journal.create(
                    os.path.join(self.dir, run_id + SUFFIX),
                    make_records(run_id),
                    pool=True,
                    announce=functools.partial(self._announce, run_id),
                )
                return run_id
            except FileExistsError:
                continue  # 48 random bits collided: draw again

    def refill_pool(self) -> int:
        """Make empty journal files ahead of starts (wfl/pool.py); a worker calls it."""
        from . import pool

        try:
            return pool.refill(self.dir)
        except OSError:
            return 0  # (only a speed-up: clients then create their files themselves)

    # -- listing ---------------------------------------------------------------------------

    def run_ids(self, names: list[str] | None = None) -> list[str]:
        """Every run in the directory (`names`: its listing, if already made). A `*.journal`
        file whose name is not a run id (a backup copy, say) is not a run: it is left alone
        (see stray_files)."""
        # one regex pass over all names at C speed: 10,000 names in ~2 ms, not ~9
        return _RUN_JOURNAL.findall("\0".join(self._names() if names is None else names))

    def stray_files(self, names: list[str] | None = None) -> list[str]:
        """Names of `*.journal` files that are not runs (their name is not a run id)."""
        names = self._names() if names is None else names
        joined = "\0".join(names) + "\0"
        if joined.count(SUFFIX + "\0") == len(_RUN_JOURNAL.findall(joined)):
            return []  # (the usual case, at C speed: every journal is a run's)
        return sorted(n for n in names if n.endswith(SUFFIX) and not _ID.match(n[: -len(SUFFIX)]))

    def _names(self) -> list[str]:
        try:
            return os.listdir(self.dir)
        except FileNotFoundError:
            return []

    def resolve(self, prefix: str) -> str:
        """The one run id starting with `prefix` (git-style abbreviation)."""
        check_id(prefix)
        # (a journal without a record is no run: unborn.py; a look costs an open, not a stat)
        found = unborn.started(self.journal_path(prefix))
        if found is not None:
            if found:
                return prefix
            raise RunNotStarted(prefix)
        matches = [r for r in self.run_ids() if r.startswith(prefix)]
        matches = [r for r in matches if unborn.started(self.journal_path(r)) is not False]
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

    def read_damaged(self, run_id: str) -> tuple[list[Record], JournalCorrupt | None]:
        try:
            return self.read(run_id), None
        except JournalCorrupt as exc:
            data = self.journal_path(run_id).read_bytes()[: exc.offset]
            try:
                good = journal.parse(data, start=len(journal.MAGIC), path=exc.path).records
            except JournalCorrupt:
                good = []
            return good, exc

    def update(self, run_id: str, decide: Callable[[list[Record]], list[Record]]) -> list[Record]:
        path = self.journal_path(run_id)

        def checked(existing: list[Record]) -> list[Record]:
            check_history(existing, path)  # a broken journal gets nothing appended
            return decide(existing)

        try:
            return journal.update(path, checked, cls=RunJournalWriter)
        except FileNotFoundError:
            raise RunNotFound(run_id) from None

    def delete(self, run_id: str, *, check: Callable[[list[Record]], None] | None = None) -> None:
        path = self.journal_path(run_id)
        if check is None:
            path.unlink(missing_ok=True)
        else:
            decide = check

            def checked(records: list[Record]) -> None:
                check_history(records, path)
                decide(records)

            try:
                journal.delete(path, checked, cls=RunJournalWriter)
            except FileNotFoundError:
                raise RunNotFound(run_id) from None
        self.lock_path(run_id).unlink(missing_ok=True)

    def writer(self, run_id: str) -> journal.JournalWriter:
        lease = self._held.get(run_id)
        # (a leased journal's path was built for its lease: pathlib costs ~20 us a path cold,
        # on the way from a start to its first step)
        path = lease.path if lease is not None and lease.path else self.journal_path(run_id)
        try:
            if lease is None:  # (not leased through this store: the lock file fallback)
                writer = RunJournalWriter(path)
            else:
                fd = lease.adopt_fd()  # the leased journal's own descriptor: no second open
                if os.fstat(fd).st_nlink == 0:  # deleted since we leased it
                    os.close(fd)
                    raise FileNotFoundError(path)
                writer = RunJournalWriter(path, fd=fd)
        except FileNotFoundError:
            raise RunNotFound(run_id) from None
        return writer

    def append_many(
        self, batches: Sequence[tuple[journal.JournalWriter, bytes]]
    ) -> list[list[Record] | BaseException]:
        """Group commit across runs (stores.base.GroupCommit): one sync for every journal."""
        return journal.append_group(batches)

    def begin_many(
        self, batches: Sequence[tuple[journal.JournalWriter, bytes]]
    ) -> journal.GroupWrite:
        """append_many in parts: write now, sync in any thread, then finish (the worker's
        loop writes and hops to a thread only for the sync)."""
        return journal.GroupWrite(batches)

    def summaries(self, *, newest: int | None = None, save: bool = True) -> list[RunSummary]:
        from .index import summaries

        return summaries(self, newest=newest, save=save)

    def versions(self) -> dict[str, object]:
        """Each run's journal version: (mtime_ns, size), as an append may keep the mtime."""
        from .dirwatch import versions

        return versions(self)

    def version_watch(self) -> VersionWatch:
        """What a worker's rescans use to learn which journals changed (dirwatch.py)."""
        from .dirwatch import VersionWatch

        return VersionWatch(self)

    def remove_unstarted(
        self, run_id: str, now: float, grace: float = unborn.GRACE
    ) -> tuple[bool, float | None]:
        """Remove the run's journal if it holds no record and is older than `grace` (a start
        cut short: unborn.py); (removed, when it will be if kept)."""
        return unborn.remove_if_stale(self.journal_path(run_id), now, grace)

    def modified_at(self, run_id: str) -> float:
        try:
            return os.stat(self.journal_path(run_id)).st_mtime
        except FileNotFoundError:
            raise RunNotFound(run_id) from None

    # -- leases ----------------------------------------------------------------------------

    def try_lease(self, run_id: str) -> leases.JournalLease | leases.FileLease | None:
        """The run's lease if no other worker holds it, else None. Released on process death.
        A lock on the journal itself (wfl.leases); its descriptor is what `writer` reuses."""
        if not leases.OFD:
            return leases.lease_lock_file(self.lock_path(run_id))
        lease = leases.lease_journal(self.journal_path(run_id), run_id, self._forget)
        if lease is not None:
            self._held[run_id] = lease
        return lease

    def _forget(self, run_id: str, lease: leases.JournalLease) -> None:
        if self._held.get(run_id) is lease:
            del self._held[run_id]

    def is_leased(self, run_id: str) -> bool:
        if not leases.OFD:
            return leases.lock_file_leased(self.lock_path(run_id))
        return leases.journal_leased(self.journal_path(run_id))

    def workers_alive(self) -> bool:
        return any(True for _ in self.worker_tokens())

    # -- wake-ups: workers listen on abstract unix datagram sockets -----------------------

    def worker_tokens(self) -> Iterator[str]:
        try:
            yield from os.listdir(self.dir / "workers")
        except FileNotFoundError:
            return

    def notify_schedules(self) -> None:
        """Tell every live worker to look at the schedules again."""
        self.notify(SCHEDULES_NEWS)

    def listen(
        self, *, worker: bool = True, share: tuple[int, int] | None = None
    ) -> tuple[str, DatagramListener] | None:
        """(Store.listen) share: (index, count) of a process of `wfl worker --processes
        count`: it then hears of new runs of its share only (datagrams.py)."""
        if worker and leases.OFD and (self.dir / "locks").is_dir():
            # a worker starting is when a rolling upgrade goes wrong: say it where it shows
            import logging  # (here: `wfl status` never logs)

            logging.getLogger(__name__).warning(
                "%s/locks/ is from an older wfl, whose workers lease runs through lock files "
                "that this one does not see: make sure no older worker serves this directory, "
                "then delete locks/",
                self.dir,
            )
        return datagrams.listen(self.dir, worker=worker, share=share)

    def _announce(self, run_id: str) -> None:
        """A new run's news, sent by journal.create as soon as its journal is in place (the
        workers prepare it while it is made durable); the caller's notify() of it that
        follows (ops.create_run) is then not sent twice."""
        datagrams.notify(self.dir, run_id, new=True)
        self._announced = run_id

    def notify(self, run_id: str, *, skip: str = "") -> None:
        """Tell every live worker (but `skip`) that `run_id` has news (new run, cancel...)."""
        if run_id == self._announced:
            self._announced = None
            return
        datagrams.notify(self.dir, run_id, skip=skip)


def check_history(records: list[Record], path: Path) -> None:
    """A run's journal starts with its run record. One that holds no record at all is a
    start cut short, no run (RunNotStarted: unborn.py); one whose records start otherwise is
    broken (cut by hand?): reported, cleaned up, never driven."""
    if not records:
        raise RunNotStarted(path.name.split(".")[0])
    if records[0].get("t") != "run":
        raise JournalCorrupt(str(path), 0, "its first record is not the run's record")


class RunJournalWriter(journal.JournalWriter):
    """A run's journal as a worker writes it: one that holds no run record is broken (see
    check_history), whatever its header, and left as it is; one that holds no record at all
    is no run (RunNotStarted), left to its creator or its removal (unborn.py)."""

    repair_header = False

    def _no_record(self) -> None:
        raise RunNotStarted(self.path.name.split(".")[0])

    def read_all(self) -> list[Record]:
        records = super().read_all()
        check_history(records, self.path)
        return records


SCHEDULES_NEWS = "schedules"  # the datagram that tells workers the schedules changed


Store = FileStore  # the name this class had before the Store protocol (wfl.stores.base)
