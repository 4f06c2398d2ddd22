"""One run's append-only journal file: durable appends of framed records, safe reads.

File layout: an 8-byte header (MAGIC), then frames (frames.py: length, crc32, msgpack). A
frame that is cut short or fails its checksum at the end of the file is a torn tail (a crash
mid-append): it is ignored on read and cut off before the next append. Bad bytes followed by
a good frame are corruption and raise JournalCorrupt naming file and offset.

Writers (the worker driving the run, and `wfl cancel` / `send-event` from other processes)
serialize on flock() of the journal file itself; the worker learns of records others appended
because the file grew past the offset it last wrote. The run's lease is a separate lock, on a
byte range of the same file far past its data (wfl/leases.py): on Linux flock() and byte-range
locks never wait for each other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import JournalCorrupt, JournalWriteError
from .linksync import file_sync_covers_link, fsync_dir

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor
from .frames import (  # re-exported: journal.encode, journal.read... is how callers say it
    FRAME_OVERHEAD,
    MAX_RECORD,
    ReadResult,
    Record,
    decode,
    decode_stream,
    encode,
    frame,
    frame_checked_values,
    pack,
    parse,
    payloads,
    roundtrip,
)

__all__ = [
    "FRAME_OVERHEAD",
    "MAGIC",
    "MAX_RECORD",
    "GroupWrite",
    "JournalWriter",
    "ReadResult",
    "Record",
    "append_group",
    "create",
    "decode",
    "decode_stream",
    "delete",
    "encode",
    "frame",
    "frame_checked_values",
    "fsync_dir",
    "pack",
    "parse",
    "payloads",
    "read",
    "roundtrip",
    "update",
]

MAGIC = b"WFLJ\x00\x01\r\n"  # format version 1; \r\n catches text-mode mangling
FILE_MODE = 0o600


def read(path: Path) -> ReadResult:
    """All good records of the journal at `path`. Raises JournalCorrupt, FileNotFoundError."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):  # crashed while creating: header itself is torn
            return ReadResult([], len(data), 0)
        raise JournalCorrupt(str(path), 0, "not a wfl journal (bad header)")
    return parse(data, start=len(MAGIC), path=str(path))


def create(
    path: str | Path,
    records: Iterable[Record],
    *,
    pool: bool = False,
    announce: Callable[[], None] | None = None,
) -> None:
    """Create a new journal holding `records`, durably and whole: it is written under a
    temporary name and linked into place, so no reader ever sees it empty or half written,
    and a crash of this process leaves at most a hidden temporary file. Fails if `path`
    exists.

    pool: take an empty file made ahead of time by a worker (wfl/pool.py) if there is one,
    rather than create an inode. announce: called once the journal is in place, before this
    returns (a start's news to the workers: see below).

    One commit of the file system's journal rather than two in turn: the file is linked into
    place before its fsync, so the fsync commits the name with the data where that is known
    to hold (linksync.py: ext4, XFS); elsewhere the directory is synced after it, as POSIX
    asks. Where it holds, the news goes out before the fsync, so that a worker reads and
    replays the run while the disk commits: the worker acts on the run only after its own
    fsync of this same file (its attempt record), which makes this run record durable too.
    A reader may so see the journal before it is durable; it is whole (written before the
    link). Only a crash of the machine in that window can lose the run (Client.start had not
    returned), or leave it as a journal without its run record (no run: unborn.py)."""
    data = MAGIC + b"".join(frame(r) for r in records)
    # (paths as strings: pathlib costs ~10-20 us an operation on cold caches, and this runs
    # once per start, before its news: issue 16)
    where, name = os.path.split(path)
    tmp = os.path.join(where, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = None
    if pool:
        from . import pool as journal_pool

        taken = journal_pool.take(where, tmp)
        if taken is not None:
            fd, have = taken
            data = data[have:]  # (its header, written ahead: no block to allocate now)
    if fd is None:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except OSError as exc:
            raise JournalWriteError(f"cannot create journal {path}: {exc.strerror}") from None
    linked = False
    try:
        try:
            _write_all(fd, data, path, "write new")
            os.link(tmp, path)  # atomic, and never replaces: FileExistsError if the run exists
            linked = True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        with_file = file_sync_covers_link(os.fstat(fd).st_dev)
        if with_file and announce is not None:
            announce()
        os.fsync(fd)
        if not with_file:
            fsync_dir(where)
    except OSError as exc:
        if isinstance(exc, FileExistsError) and not linked:
            raise
        if linked:  # not durable: take the run back (a worker that took it cannot sync it)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        raise JournalWriteError(f"cannot create journal {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if not with_file and announce is not None:
        announce()


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise JournalWriteError(f"cannot open journal {path}: {exc.strerror}") from None


def _write_all(fd: int, data: bytes, path: str | Path, verb: str = "append to") -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as exc:
            what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            raise JournalWriteError(f"cannot {verb} journal {path}: {what}") from None
        view = view[written:]


class JournalWriter:
    """Appends to one journal. Cheap to keep open; every append is under flock()."""

    def __init__(self, path: Path, *, fd: int | None = None) -> None:
        """`fd`: a read-write descriptor of the journal to adopt (closed by close()), such
        as a dup of the run's lease descriptor (wfl.leases): saves opening it again."""
        self.path = path
        self._fd = fd if fd is not None else _open(path)
        self.end = -1  # offset just past the last record we know of; -1: not read yet
        self._unreported: list[Record] = []  # others' records read during a failed append
        # flock() excludes other processes, not threads sharing this fd (a worker appends
        # from an I/O thread while its event loop polls): this lock keeps those apart
        self._mutex = threading.Lock()

    def close(self) -> None:
        with self._mutex:  # not while another thread appends: the fd number could be reused
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def read_all(self) -> list[Record]:
        """Read the whole journal (under lock), cut a torn tail off, remember its end."""
        with self._locked():
            return self._read_locked()

    repair_header = True  # a header cut short (by an older wfl's creation) is written whole

    def _read_locked(self) -> list[Record]:
        data = self._read_from(0)
        if not data.startswith(MAGIC):
            if MAGIC.startswith(data):  # creation was cut short
                self._no_record()
                if self.repair_header:
                    os.ftruncate(self._fd, 0)
                    os.pwrite(self._fd, MAGIC, 0)
                    os.fsync(self._fd)
                    self.end = len(MAGIC)
                    return []
            raise JournalCorrupt(str(self.path), 0, "not a wfl journal (bad header)")
        result = parse(data, start=len(MAGIC), path=str(self.path))
        if not result.records:
            self._no_record()
        self._cut(result)
        return result.records

    def _no_record(self) -> None:
        """The journal holds no record (before any repair or cut): a subclass may refuse it."""

    def append(self, records: list[Record], *, sync: bool = True) -> list[Record]:
        """Append `records` (durably when `sync`) and return the records that other processes
        appended since our last read, which now precede ours in the file."""
        return self.append_frames(b"".join(frame(r) for r in records), sync=sync)

    def append_frames(self, payload: bytes, *, sync: bool = True) -> list[Record]:
        """Like append, for records already framed with `frame()`."""
        with self._locked():
            foreign = self._catch_up()
            try:
                self._append_payload(payload, sync=sync)
            except BaseException:
                self._unreported = foreign  # hand them out with the next poll or append
                raise
            return foreign

    def _write_held(self, payload: bytes) -> tuple[_Flock, list[Record]]:
        """(append_group) Lock, catch up and write `payload` without syncing it; the lock
        stays held (returned) until the caller has synced and released it."""
        lock = self._locked()
        lock.__enter__()
        foreign: list[Record] = []
        try:
            foreign = self._catch_up()
            self._append_payload(payload, sync=False)
        except BaseException:
            self._unreported = foreign
            lock.__exit__()
            raise
        return lock, foreign

    def _append_locked(self, records: list[Record], *, sync: bool) -> None:
        self._append_payload(b"".join(frame(r) for r in records), sync=sync)

    def _append_payload(self, payload: bytes, *, sync: bool) -> None:
        if not payload:
            return
        try:
            _write_all_at(self._fd, payload, self.end, self.path)
        except JournalWriteError:
            os.ftruncate(self._fd, self.end)  # leave no partial record behind
            raise
        self.end += len(payload)
        if sync:
            os.fsync(self._fd)

    def poll(self) -> list[Record]:
        """Records other processes appended since our last read or append."""
        with self._locked():
            return self._catch_up()

    def size(self) -> int:
        return self.end

    def _catch_up(self) -> list[Record]:
        if self.end < 0:
            raise RuntimeError("read_all() must come before append()")
        earlier, self._unreported = self._unreported, []
        actual = os.fstat(self._fd).st_size
        if actual == self.end:
            return earlier
        if actual < self.end:  # only an outside hand shrinks a journal
            raise JournalCorrupt(str(self.path), actual, "journal was truncated by another tool")
        data = self._read_from(self.end)
        result = parse(data, start=0, path=str(self.path), base=self.end)
        self._cut(result)
        return earlier + result.records

    def _cut(self, result: ReadResult) -> None:
        if result.torn:
            os.ftruncate(self._fd, result.end)
            os.fsync(self._fd)
        self.end = result.end

    def _read_from(self, offset: int) -> bytes:
        size = os.fstat(self._fd).st_size
        return os.pread(self._fd, size - offset, offset) if size > offset else b""

    def _locked(self) -> _Flock:
        return _Flock(self, self._mutex)


GroupResult = list[Record] | BaseException
Decide = Callable[[list[Record]], list[Record]]  # update(): what to append, seeing the records
Check = Callable[[list[Record]], None]  # delete(): raises to refuse


def append_group(items: Sequence[tuple[JournalWriter, bytes]]) -> list[GroupResult]:
    """Append each writer's framed records and make them all durable together (group commit
    across runs). Per item: the records others appended before ours (as append_frames
    returns them), or the exception that item met (the others are still written)."""
    group = GroupWrite(items)
    error: BaseException | None = None
    try:
        group.sync()
    except BaseException as exc:
        error = exc
        raise
    finally:
        results = group.finish(error)
    return results


class GroupWrite:
    """append_group in three parts, so that a worker's loop thread does the cheap ones (one
    hop to a thread per group, for the sync, instead of a thread taking the GIL back after
    every write): each payload is written under its journal's lock here; `sync` makes them
    all durable with one call (any thread); `finish` releases the locks and says per item
    what happened. Nobody else reads or appends to these journals before they are durable."""

    def __init__(self, items: Sequence[tuple[JournalWriter, bytes]]) -> None:
        self.results: list[GroupResult] = []
        self.held: list[tuple[int, JournalWriter, _Flock, int]] = []
        self.failed: dict[int, str] = {}
        for i, (writer, payload) in enumerate(items):
            start = writer.end
            try:
                lock, foreign = writer._write_held(payload)
            except BaseException as exc:  # a closed writer, disk full...: this item only
                self.results.append(exc)
                continue
            self.results.append(foreign)
            self.held.append((i, writer, lock, start))

    @property
    def written(self) -> bool:
        """Whether anything was written (else there is nothing to sync)."""
        return bool(self.held)

    def sync(self) -> None:
        self.failed = sync_journals(self.sync_fds())

    def sync_fds(self) -> list[int]:
        """The descriptors sync() fsyncs, for a caller that syncs them itself (aio.py), then
        calls finish(failed=...)."""
        return [w._fd for _, w, _, _ in self.held]

    def finish(
        self, error: BaseException | None = None, *, failed: dict[int, str] | None = None
    ) -> list[GroupResult]:
        """Release the locks; `error`: sync() itself raised (then nothing counts as synced);
        `failed`: {index in sync_fds(): why} of a sync done by the caller."""
        if failed is not None:
            self.failed = failed
        if error is not None:
            self.failed = {k: str(error) for k in range(len(self.held))}
        try:
            for k, why in self.failed.items():
                i, writer, _, start = self.held[k]
                # what the kernel did with the unsynced bytes is unknown: take them back
                with contextlib.suppress(OSError):
                    os.ftruncate(writer._fd, start)
                writer.end = start
                earlier = self.results[i]
                writer._unreported = earlier if isinstance(earlier, list) else []
                self.results[i] = JournalWriteError(f"cannot sync journal {writer.path}: {why}")
        finally:
            held, self.held = self.held, []
            for _, _, lock, _ in held:
                lock.__exit__()
        return self.results


def sync_journals(fds: Sequence[int]) -> dict[int, str]:
    """Make what was written to these journals durable: one fsync each, in parallel threads
    (ext4's journal batches concurrent fsyncs into one commit; in turn, each would cost a
    commit of its own). Not syncfs(): it costs about one fsync for any number of journals on
    an idle disk, but it writes back every dirty page of the file system, and with another
    process dirtying 200 MB beside it a group took 10-15 ms instead of 0.5-2.5 ms
    (bench/group_commit.py --dirty 200). Returns {index: why} for the journals that failed."""
    failed: dict[int, str] = {}
    others = [_sync_pool().submit(os.fsync, fd) for fd in fds[1:]]
    for k, fd in enumerate(fds[:1]):
        try:
            os.fsync(fd)
        except OSError as exc:
            failed[k] = exc.strerror or str(exc)
    for k, future in enumerate(others, 1):
        error = future.exception()
        if error is not None:
            failed[k] = getattr(error, "strerror", None) or str(error)
    return failed


_SYNC_POOL: list[ThreadPoolExecutor] = []


def _sync_pool() -> ThreadPoolExecutor:
    if not _SYNC_POOL:
        from concurrent.futures import ThreadPoolExecutor  # a worker's group commits only

        _SYNC_POOL.append(ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="wfl-sync"))
    return _SYNC_POOL[0]


SYNC_THREADS = 16  # fsyncs in flight at once, per process


def delete(path: Path, check: Check, *, cls: type[JournalWriter] = JournalWriter) -> None:
    """Under the journal's lock, let `check` look at the records (it raises to refuse), then
    delete the file. A writer that waited for the lock meanwhile finds it deleted (update()
    raises FileNotFoundError) instead of appending to a file no longer there."""
    writer = cls(path)
    try:
        with writer._locked():
            _check_not_deleted(writer)
            check(writer._read_locked())
            path.unlink()
    finally:
        writer.close()


def _check_not_deleted(writer: JournalWriter) -> None:
    if os.fstat(writer._fd).st_nlink == 0:
        raise FileNotFoundError(errno.ENOENT, "journal deleted", str(writer.path))


def _write_all_at(fd: int, data: bytes, offset: int, path: Path) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.pwrite(fd, view, offset)
        except OSError as exc:
            what = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            raise JournalWriteError(f"cannot append to journal {path}: {what}") from None
        view = view[written:]
        offset += written


class _Flock:
    """The writer's thread lock, then flock() of its journal (reads the fd only once held,
    so a writer closed meanwhile fails cleanly instead of locking a reused fd number)."""

    def __init__(self, writer: JournalWriter, mutex: threading.Lock) -> None:
        self.writer = writer
        self.mutex = mutex
        self.fd = -1

    def __enter__(self) -> None:
        self.mutex.acquire()
        try:
            self.fd = self.writer._fd
            if self.fd < 0:
                raise JournalWriteError(f"journal {self.writer.path} is closed")
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.mutex.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.mutex.release()


def update(path: Path, decide: Decide, *, cls: type[JournalWriter] = JournalWriter) -> list[Record]:
    """For one-off writers such as `wfl cancel`: under the journal's lock, read every record,
    let `decide` look at them and return what to append (it may raise to refuse), append it
    durably. Returns the appended records. FileNotFoundError if the journal is (or, while
    this waited for the lock, was) deleted."""
    writer = cls(path)
    try:
        with writer._locked():
            _check_not_deleted(writer)
            existing = writer._read_locked()
            new = decide(existing)
            if new:
                writer._append_locked(new, sync=True)
        return new
    finally:
        writer.close()
