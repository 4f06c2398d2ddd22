"""Run leases of the journal directory store: which worker drives a run.

A lease is a write lock on one byte of the run's journal far past any data it will ever hold
(LEASE_OFFSET), taken with Linux open-file-description locks (F_OFD_SETLK). Why these:
- They belong to the open file description, not to the process: closing another descriptor
  of the same journal (a `wfl status` read, a cancel's append, all in the worker's own
  process) leaves the lease alone. Classic POSIX locks (F_SETLK) would be dropped by the
  first such close, silently.
- They end when the last descriptor of that description closes, so with the process: a
  killed worker's runs are free at once.
- On Linux, byte-range locks and flock() are separate: the journal writers' append lock
  (flock of the whole file, journal.py) never waits for a lease, nor a lease for it.
- The descriptor that holds the lease is the journal's own: the worker's writer adopts a dup
  of it (FileStore.writer), so a lease costs no second open and no lock file.

Where F_OFD_* is missing (not Linux), a lease is flock() of `<dir>/locks/<id>.lock` as before.
Workers of wfl before this change use those lock files on Linux too: see the CHANGELOG.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Callable
from pathlib import Path

# Whether leases are OFD locks on the journal (tests switch it off to cover the fallback).
OFD = hasattr(fcntl, "F_OFD_SETLK")
LEASE_OFFSET = 1 << 62  # a journal never grows to 4 EiB: no data byte is ever in the range
# struct flock: l_type, l_whence (short), l_start, l_len (off_t), l_pid (pid_t, 0 for OFD),
# padded to the alignment of off_t ("0q") as the kernel copies the whole struct back
_FLOCK = struct.Struct("hhqqi0q")
_BUSY = (errno.EAGAIN, errno.EACCES)
Forget = Callable[[str, "JournalLease"], None]


def _flock(kind: int) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, LEASE_OFFSET, 1, 0)


def lock(fd: int) -> bool:
    """Take the lease range of the journal open at `fd` (read-write); False if held elsewhere."""
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK))
    except OSError as exc:
        if exc.errno in _BUSY:
            return False
        raise
    return True


def unlock(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK))


def held(fd: int) -> bool:
    """Whether another open file description holds the lease of the journal open at `fd`."""
    got = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fcntl.F_WRLCK))
    return bool(_FLOCK.unpack(got)[0] != fcntl.F_UNLCK)


class JournalLease:
    """A held lease: the journal's descriptor with the lease range locked. `fd` is -1 when
    there was no journal to lock (the run is gone): then no writer can be had from it."""

    def __init__(self, fd: int, run_id: str, forget: Forget, path: Path | None = None) -> None:
        self.fd = fd
        self.run_id = run_id
        self._forget = forget  # tells the store that made it (which lends `fd` to writers)
        self.path = path  # the journal's (its writer's: not built again)

    def adopt_fd(self) -> int:
        """A descriptor of the leased journal for the run's writer, which closes it: a dup of
        ours, so the lease does not end with the writer and no second open is needed."""
        if self.fd < 0:
            raise FileNotFoundError(errno.ENOENT, "the run's journal is gone")
        return os.dup(self.fd)

    def release(self) -> None:
        self._forget(self.run_id, self)
        fd, self.fd = self.fd, -1
        if fd >= 0:
            try:
                unlock(fd)  # now, even if the writer's dup is still open
            finally:
                os.close(fd)


# Reading a journal must not write its inode: under relatime the first read after a write
# updates the access time, a change to the inode in the file system's running transaction,
# which a client's fsync of a journal it just created (read here at once: journal.create's
# news) would then wait to commit too. O_NOATIME is allowed to the file's owner only.
NOATIME = getattr(os, "O_NOATIME", 0)


def _open_noatime(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | NOATIME)
    except PermissionError:
        if not NOATIME:
            raise
        return os.open(path, os.O_RDWR)  # (not the owner: the file may still be ours to open)


def lease_journal(path: Path, run_id: str, forget: Forget) -> JournalLease | None:
    """The lease of the journal at `path`, or None if another worker holds it. A journal
    that does not exist gives a lease of nothing."""
    try:
        fd = _open_noatime(path)
    except FileNotFoundError:
        return JournalLease(-1, run_id, forget, path)
    try:
        if not lock(fd):
            os.close(fd)
            return None
    except BaseException:
        os.close(fd)
        raise
    # (deleted between our open and our lock? FileStore.writer finds it unlinked: every
    # syscall here is a chance for the worker's loop thread to lose the GIL)
    return JournalLease(fd, run_id, forget, path)


def journal_leased(path: Path) -> bool:
    """Whether some worker (this process included) holds the lease of the journal."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        return held(fd)
    finally:
        os.close(fd)  # an OFD lock of ours on another descriptor survives this close


# -- the fallback: a lock file per run ------------------------------------------------------


class FileLease:
    """A lease held as flock() of the run's lock file (where OFD locks are missing)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)  # ends the flock


def lease_lock_file(path: Path) -> FileLease | None:
    """flock() `path` (created 0600, its directory too); None if another holder has it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return FileLease(fd)


def lock_file_leased(path: Path) -> bool:
    lease = lease_lock_file(path)
    if lease is None:
        return True
    lease.release()
    return False
