"""Journals synced by the kernel, reported on the worker's loop: Linux AIO fsync.

A group commit syncs K journals at once (commit.py). In threads that is K thread wake-ups
and each thread taking the GIL two or three times, all while the loop thread works: the
hand-offs cost the loop more than the fsyncs' own bookkeeping (issue 9). Linux (4.18+) runs
an fsync submitted with io_submit in a kernel worker, several in parallel, and reports each
completion through an eventfd the loop watches: one system call to start a group, one look
when it is done, and no Python thread at all.

Where io_setup is missing or refused (not Linux, seccomp, aio-max-nr reached) or the file
system refuses an asynchronous fsync, `open_aio` returns None and the caller syncs in
threads as before (journal.sync_journals).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)

# io_setup, io_destroy, io_getevents, io_submit
_SYSCALLS = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2)}
IOCB_CMD_FSYNC = 2
IOCB_FLAG_RESFD = 1
DEPTH = 1024  # fsyncs in flight at once (one group at a time: its journals)
BATCH = 64  # completions read per io_getevents


class _Iocb(ctypes.Structure):  # struct iocb (linux/aio_abi.h), little-endian
    _fields_ = [
        ("data", ctypes.c_uint64),
        ("key", ctypes.c_uint32),
        ("rw_flags", ctypes.c_int32),
        ("opcode", ctypes.c_uint16),
        ("reqprio", ctypes.c_int16),
        ("fildes", ctypes.c_uint32),
        ("buf", ctypes.c_uint64),
        ("nbytes", ctypes.c_uint64),
        ("offset", ctypes.c_int64),
        ("reserved2", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("resfd", ctypes.c_uint32),
    ]


class _Event(ctypes.Structure):  # struct io_event
    _fields_ = [
        ("data", ctypes.c_uint64),
        ("obj", ctypes.c_uint64),
        ("res", ctypes.c_int64),
        ("res2", ctypes.c_int64),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


Done = Callable[[dict[int, str]], None]  # {index: why} of the fsyncs that failed


class _Group:
    __slots__ = ("done", "failed", "left")

    def __init__(self, left: int, done: Done) -> None:
        self.left = left
        self.failed: dict[int, str] = {}
        self.done = done


class AioSync:
    """fsyncs submitted together, each group's callback called on the loop when all of its
    fsyncs are done (with those that failed)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, libc: ctypes.CDLL, nrs: tuple[int, ...]
    ) -> None:
        self.loop = loop
        self._syscall = libc.syscall
        self._setup, self._destroy, self._getevents, self._submit = nrs
        ctx = ctypes.c_ulong(0)
        if self._call(self._setup, ctypes.c_long(DEPTH), ctypes.byref(ctx)) < 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        self.ctx = ctx
        try:
            self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except OSError:
            self._call(self._destroy, self.ctx)
            raise
        self._events = (_Event * BATCH)()
        self._zero = _Timespec(0, 0)
        self._groups: dict[int, _Group] = {}  # by serial
        self._backlog: list[tuple[int, int]] = []  # (data, fd) waiting for room in the ring
        self._serial = 0
        self.in_flight = 0
        loop.add_reader(self.efd, self._reap)
        self.closed = False

    def _call(self, nr: int, *args: object) -> int:
        return int(self._syscall(ctypes.c_long(nr), *args))

    def submit(self, fds: Sequence[int], done: Done) -> None:
        """Start an fsync of each of `fds`; `done({index: why})` on the loop once all have
        ended. Raises OSError if the kernel refuses the first one (a file system without
        asynchronous fsync: the caller syncs another way)."""
        self._serial = serial = (self._serial + 1) & 0xFFFFFFFF
        group = _Group(len(fds), done)
        self._groups[serial] = group
        todo = [((serial << 32) | k, fd) for k, fd in enumerate(fds)]
        try:
            self._push(todo, first=True)
        except OSError:
            del self._groups[serial]
            raise

    def _push(self, todo: list[tuple[int, int]], *, first: bool = False) -> None:
        """Submit (data, fd) fsyncs in order. A ring that is full (EAGAIN) keeps the rest for
        when completions make room; one the kernel refuses counts as a failed sync."""
        while todo:
            n = len(todo)
            iocbs = (_Iocb * n)()
            pointers = (ctypes.POINTER(_Iocb) * n)()
            for i, (data, fd) in enumerate(todo):
                cb = iocbs[i]
                cb.data = data
                cb.opcode = IOCB_CMD_FSYNC
                cb.fildes = fd
                cb.flags = IOCB_FLAG_RESFD
                cb.resfd = self.efd
                pointers[i] = ctypes.pointer(cb)
            got = self._call(self._submit, self.ctx, ctypes.c_long(n), pointers)
            if got > 0:
                self.in_flight += got
                todo = todo[got:]
                first = False
                continue
            code = ctypes.get_errno() if got < 0 else errno.EAGAIN
            if code == errno.EAGAIN and self.in_flight:
                self._backlog.extend(todo)  # resubmitted as completions make room
                return
            if first:
                raise OSError(code, os.strerror(code))
            data, _ = todo.pop(0)  # (a descriptor the kernel will not sync: that one fails)
            self._ended(data, -code)

    def _ended(self, data: int, res: int, *, reaped: bool = False) -> None:
        group = self._groups.get(data >> 32)
        if group is None:
            return
        if res < 0:
            group.failed[data & 0xFFFFFFFF] = os.strerror(-res)
        group.left -= 1
        if not group.left:
            del self._groups[data >> 32]
            if reaped:  # (a callback of the loop already)
                try:
                    group.done(group.failed)
                except Exception:  # (the other completions read with it still count)
                    log.exception("internal error after a group's sync")
            else:  # within submit(): not before it returns
                self.loop.call_soon(group.done, group.failed)

    def _reap(self) -> None:
        try:
            os.eventfd_read(self.efd)
        except BlockingIOError:
            pass
        events = self._events
        while True:
            got = self._call(self._getevents, self.ctx, ctypes.c_long(0), ctypes.c_long(BATCH),
                             events, ctypes.byref(self._zero))  # fmt: skip
            if got <= 0:
                break
            self.in_flight -= got
            for i in range(got):
                self._ended(events[i].data, events[i].res, reaped=True)
            if got < BATCH:
                break
        if self._backlog:
            backlog, self._backlog = self._backlog, []
            self._push(backlog)

    def close(self) -> None:
        """Stop watching; fsyncs still in flight are waited for (their journals' bytes may
        be the last records a stopping worker writes)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self.efd)
        except Exception:  # the loop is closed already
            pass
        while self.in_flight > 0:
            got = self._call(self._getevents, self.ctx, ctypes.c_long(1), ctypes.c_long(BATCH),
                             self._events, None)  # fmt: skip
            if got <= 0:
                break
            self.in_flight -= got
        self._call(self._destroy, self.ctx)
        os.close(self.efd)


def open_aio(loop: asyncio.AbstractEventLoop) -> AioSync | None:
    """An AioSync for `loop`, or None where the kernel does not offer one (see above)."""
    nrs = _SYSCALLS.get(platform.machine())
    if nrs is None or not hasattr(os, "eventfd") or os.environ.get("WFL_AIO") == "0":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return AioSync(loop, libc, nrs)
    except (OSError, AttributeError) as exc:
        log.debug("no AIO fsync (%s): syncing in threads", exc)
        return None
