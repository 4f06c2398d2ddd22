"""Which journals of a directory changed, without looking at each: the kernel's inotify.

A worker rescans every few seconds as a safety net for lost wake-ups. Stat'ing every journal
for that costs CPU in proportion to the runs it holds (10,000 sleeping runs: ~45 ms of CPU
per rescan on this machine, every 10 s, while nothing happens). With inotify the kernel
queues the names of files written, created, renamed or removed in the directory; a rescan
reads that queue (nothing, when nothing happened) and stats only those. When the queue
overflowed, the directory itself moved, or inotify is missing (not Linux, out of instances),
the caller lists and stats everything, as before.

The queue is read only when a rescan asks (it is not on the event loop): a busy worker's own
appends would otherwise wake it for nothing.
"""

from __future__ import annotations

import errno
import os
import re
import struct
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import FileStore

# <sys/inotify.h>
_IN_MODIFY = 0x2
_IN_ATTRIB = 0x4
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x01000000
_IN_EXCL_UNLINK = 0x04000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000

_WATCHED = (_IN_MODIFY | _IN_ATTRIB | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
            | _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_ONLYDIR | _IN_EXCL_UNLINK)  # fmt: skip
_LOST = _IN_Q_OVERFLOW | _IN_IGNORED | _IN_DELETE_SELF | _IN_MOVE_SELF  # look at everything
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)

_libc: Any = None


def _inotify() -> Any:
    global _libc
    if _libc is None:
        import ctypes  # (here: a worker on PostgreSQL never watches a directory)

        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.inotify_init1.argtypes = [ctypes.c_int]
        _libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return _libc


class DirWatch:
    """The names changed in one directory since the last look. Owned by the process that
    made it: after a fork the child makes its own (a shared queue would split the events)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        """OSError if the kernel offers no watch (the caller then looks at everything)."""
        try:
            libc = _inotify()
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError) as exc:  # no libc symbol: not Linux
            raise OSError(errno.ENOSYS, f"no inotify: {exc}") from None
        import ctypes

        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        if libc.inotify_add_watch(fd, os.fsencode(directory), _WATCHED) < 0:
            code = ctypes.get_errno()
            os.close(fd)
            raise OSError(code, f"inotify_add_watch {directory} failed")
        self.fd = fd
        self.pid = os.getpid()
        self._closer = weakref.finalize(self, _close, fd, self.pid)  # (a dropped watch, too)

    def changed(self) -> set[str] | None:
        """Names written, created, renamed or removed since the last call; None if some
        were lost (the queue overflowed, the directory moved): then look at everything."""
        if self.fd < 0 or self.pid != os.getpid():
            return None
        names: set[str] = set()
        lost = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            pos = 0
            while pos + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, pos)
                pos += _EVENT.size
                if mask & _LOST:
                    lost = True
                elif length:
                    names.add(os.fsdecode(data[pos : pos + length].rstrip(b"\0")))
                pos += length
        if lost:  # the watch may be gone with the directory: the next look starts anew
            self.close()
            return None
        return names

    def close(self) -> None:
        self._closer()
        self.fd = -1


def _close(fd: int, pid: int) -> None:
    if pid == os.getpid():  # (a forked child's copy is the child's to drop: it never reads it)
        os.close(fd)


def version_watch(store: Any) -> VersionWatch | FullLook:
    """What a worker's rescans ask what changed: the store's own watch if it has one (a
    journal directory), else a full comparison each time."""
    make = getattr(store, "version_watch", None)
    return make() if make is not None else FullLook(store)


class FullLook:
    """For a store that cannot tell what changed: every version compared, each time."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def snapshot(self) -> dict[str, object]:
        return self.store.versions()  # type: ignore[no-any-return]

    def changes(self, known: dict[str, object]) -> dict[str, object | None]:
        return diff(self.store.versions(), known)

    def close(self) -> None:
        pass


def diff(current: dict[str, object], known: dict[str, object]) -> dict[str, object | None]:
    """The runs whose version in `current` differs from `known`'s (None: gone)."""
    gone = dict.fromkeys(r for r in known if r not in current)
    return {r: v for r, v in current.items() if known.get(r) != v} | gone


def updated(known: dict[str, object], changes: dict[str, object | None]) -> dict[str, object]:
    """`known` with `changes` applied (a new dict when anything changed: a rescan in an I/O
    thread may be reading the old one; none when nothing did, which is the idle case)."""
    if not changes:
        return known
    new = dict(known)
    for run_id, version in changes.items():
        if version is None:
            new.pop(run_id, None)
        else:
            new[run_id] = version
    return new


_RUN_JOURNAL = re.compile(r"([0-9a-z]{1,64})\.journal")


class VersionWatch:
    """What changed in a journal directory since the last look, for one worker's rescans
    (`known`: the versions it saw, FileStore.versions()). The first look, and any after lost
    events, compares every journal; the others only those the kernel named."""

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.watch: DirWatch | None = None

    def snapshot(self) -> dict[str, object]:
        """FileStore.versions(), watching from before it (so nothing slips by)."""
        if self.watch is not None:
            self.watch.changed()  # drained: the listing sees all of it (lost events: closed)
        if self.watch is None or self.watch.fd < 0 or self.watch.pid != os.getpid():
            try:
                self.watch = DirWatch(self.store.dir)
            except OSError:
                self.watch = None
        return self.store.versions()

    def changes(self, known: dict[str, object]) -> dict[str, object | None]:
        """Runs whose version differs from `known` (what the worker saw), with their new
        version (None: the journal is gone). `known` is only read (a rescan runs this in an
        I/O thread; the worker applies the changes on its loop)."""
        names = self.watch.changed() if self.watch is not None else None
        if names is None or not known:  # (an emptied `known`: the worker forgot everything)
            if names is None and self.watch is not None:
                self.watch.close()  # it lost events: watch anew
            return diff(self.snapshot(), known)
        changed: dict[str, object | None] = {}
        for name in sorted(names):
            match = _RUN_JOURNAL.fullmatch(name)
            if match is None:
                continue  # not a run's journal (the index, a temporary file)
            run_id = match.group(1)
            version = _version(self.store, run_id)
            if version != known.get(run_id):
                changed[run_id] = version
        return changed

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()


def versions(store: FileStore) -> dict[str, object]:
    """FileStore.versions: each run's (mtime_ns, size), stat'ed by name in the directory."""
    from .store import SUFFIX

    try:
        fd = os.open(store.dir, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return {}
    found: dict[str, object] = {}
    stat = os.stat
    try:
        for run_id in store.run_ids():
            try:
                st = stat(run_id + SUFFIX, dir_fd=fd)
            except OSError:
                continue
            found[run_id] = (st.st_mtime_ns, st.st_size)
    finally:
        os.close(fd)
    return found


def _version(store: FileStore, run_id: str) -> object | None:
    try:
        st = os.stat(store.journal_path(run_id))
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
