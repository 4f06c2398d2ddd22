"""Journals that hold no record: starts cut short, which are not runs.

`Client.start` on a journal directory links a pool file (wfl/pool.py), which already holds
the journal's header, into place as `<id>.journal` before its fsync, and sends the workers
its news before that fsync too (journal.create, linksync.py). A crash of the machine in that
window can make the name durable without the run record: the journal then holds its header
alone, or the header and a torn first record (or, from an older wfl, nothing or part of the
header). Such a start never returned to its caller, so nobody was told the run id: it is no
run. So a journal that holds no complete record is

  - not listed, counted or reported (`wfl status`, `--json`, `wfl check`, the web view): to
    every command its id is unknown, as an id that never started (RunNotStarted, a
    RunNotFound: exit 2);
  - never driven and never written to (no header repaired, no torn tail cut): a worker lets
    its lease go at once;
  - removed by a worker (or `wfl cleanup --finished`) once nothing has touched it for GRACE
    seconds, so that they do not pile up.

A journal with records of which the first is not a run record, or with a bad record followed
by good ones, or with a header that is not wfl's, is something else: broken, reported, kept.

Why a grace period: the file's age is the only sign that its creator is gone. No start of
this wfl shows a journal without its records (they are written before the link), but a start
whose process is stopped, or a future order of those calls, must never lose its journal under
it. The age is taken from the inode's change time (ctime), which link(), rename() and every
write move: a pool file's modification time is when a worker made it, long before a start
linked it.

Idempotency keys (dirkeys.py): a keyed start syncs its journal before it links the key, so a
key never names a journal that is still being made; a key that names one without a record
(a crash) is stale, and the next start with that key makes a new run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import zlib
from pathlib import Path
from typing import cast

from .errors import JournalCorrupt
from .frames import _FRAME, MAX_RECORD, parse
from .journal import FILE_MODE, MAGIC, _write_all, frame, fsync_dir
from .records import Record

GRACE = 60.0  # seconds a journal without a record is left alone (a start may be making it)

_PROBE = 4096  # bytes read first when asking whether a journal holds a record


def holds_no_record(data: bytes) -> bool:
    """Whether a journal's bytes hold no complete record: nothing, a cut header, the header
    alone, or the header and a torn first record. (Bad bytes followed by a good record are
    corruption, and a header not wfl's is no journal: those hold data, so False.)"""
    if not data.startswith(MAGIC):
        return MAGIC.startswith(data)
    if len(data) == len(MAGIC):
        return True
    try:
        return not parse(data, start=len(MAGIC), path="").records
    except JournalCorrupt:
        return False


def started(path: Path) -> bool | None:
    """Whether the journal at `path` holds a record (True also for a broken one: it is not a
    start cut short); None if there is no such file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return _first_record_whole(fd, os.pread(fd, _PROBE, 0)) or not holds_no_record(
            _read_whole(fd)  # (no: then only the whole file tells a torn one from a broken one)
        )
    finally:
        os.close(fd)


def _first_record_whole(fd: int, head: bytes) -> bool:
    """Whether the journal's first frame is whole (its checksum holds): then it holds a
    record, without decoding any (`head`: its first bytes)."""
    start = len(MAGIC) + _FRAME.size
    if not head.startswith(MAGIC) or len(head) < start:
        return False
    length, crc = cast(tuple[int, int], _FRAME.unpack_from(head, len(MAGIC)))
    if length > MAX_RECORD:
        return False
    body = head[start : start + length]
    if len(body) < length:  # a big first record: read the rest of it
        body = os.pread(fd, length, start)
    return len(body) == length and zlib.crc32(body) == crc


def _read_whole(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def remove_if_stale(path: Path, now: float, grace: float = GRACE) -> tuple[bool, float | None]:
    """Remove the journal at `path` if it holds no record and nothing touched it for `grace`
    seconds before `now` (epoch seconds). Returns (removed, when it will be stale if it is
    kept and still holds no record, else None). Safe against concurrent callers (another
    worker, `wfl cleanup`): at most one removes it, and a journal that got its record
    meanwhile is left alone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False, None
    try:
        try:  # every writer of a journal (a worker's appends, `wfl cancel`...) holds its flock
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # (a worker's loop calls this: never wait) look again soon
            return False, now + 1.0
        st = os.fstat(fd)
        if st.st_nlink == 0 or not holds_no_record(_read_whole(fd)):
            return False, None  # removed meanwhile, or a run (or broken: kept)
        stale_at = max(st.st_mtime, st.st_ctime) + grace
        if now < stale_at:
            return False, stale_at
        try:
            named = os.stat(path)
        except FileNotFoundError:
            return False, None
        if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
            return False, None  # the name is another file's now
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            return True, None
        return False, None
    finally:
        os.close(fd)


def replace(path: Path, records: list[Record]) -> None:
    """Put a journal holding `records` in place of the one at `path`, which holds none: the
    same run created again by whoever creates it by id (a child run, whose parent's driver
    makes it anew on replay), after a crash cut its first creation short."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        try:
            _write_all(fd, MAGIC + b"".join(frame(r) for r in records), path, "write new")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
