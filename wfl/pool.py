"""Journal files made ahead of time, so that starting a run creates no inode and allocates
no block.

Creating a file is the dearest step of `Client.start` on a directory store: measured on this
project's ext4 disk, open(O_CREAT) took 0.06-0.1 ms when the disk was quiet and ~1 ms while
other processes created files. A worker keeps a few files ready in `<dir>/pool/` (off any
run's critical path: after news of new runs, in an I/O thread), each holding the journal's
8-byte header, written and synced then: the client's own write then only fills a block the
file already has, so its fsync commits a size, not an allocation (with an empty file, ext4
allocates the block at that fsync, and its conversion, a change of the inode made after the
client's write, made the client's fsync wait for the commit of the worker's attempt record:
Client.start 2.1 vs 1.05 ms, bench/pickup.py). A client takes a file by renaming it to its
journal's temporary name (rename is atomic: of two clients racing for a file one gets ENOENT
and tries the next), appends its records and goes on as with a file it created (see
journal.create). With no worker (no pool) it creates the file, as before.

What a crash can leave: a pool file is a file with a name no listing reads (not a run: `pool/`
holds nothing else, and runs are `<id>.journal` in the directory itself); a taken one is the
temporary file journal.create has always left when killed mid-way (hidden, never a run). A
file is used only if it holds nothing but the header (or nothing: a pool made by an older
wfl, or a crash before the header was synced) with one link: should a file system ever bring
a pool name back beside a journal made from its inode after a power loss, that name is
dropped, not reused.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from .journal import MAGIC, sync_journals

POOL = "pool"  # the subdirectory
SIZE = 8  # files kept ready (a burst of starts beyond it creates files, as without a pool)
FILE_MODE = 0o600
DIR_MODE = 0o700


def take(directory: str | Path, tmp: str) -> tuple[int, int] | None:
    """A pool file of `directory`, renamed to `tmp` and opened for appending, and how many
    bytes of the journal's header it holds; None if the pool is empty (or missing)."""
    pool = os.path.join(directory, POOL)  # (strings, not pathlib: see journal.create)
    try:
        names = os.listdir(pool)
    except OSError:
        return None
    # start at a different name in each process: concurrent clients rarely race for one
    k = os.getpid() % len(names) if names else 0
    for name in names[k:] + names[:k]:
        if name.startswith("."):
            continue
        try:
            os.rename(os.path.join(pool, name), tmp)
        except OSError:
            continue  # taken by another client meanwhile (ENOENT)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_APPEND)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            continue
        st = os.fstat(fd)
        if st.st_nlink == 1 and (
            st.st_size == 0 or (st.st_size == len(MAGIC) and os.pread(fd, 16, 0) == MAGIC)
        ):
            return fd, st.st_size
        os.close(fd)  # not a free file (see the module docstring): drop this name only
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return None


STALE = 60.0  # seconds after which a hidden pool file is one a crash left mid-way


def _drop_stale(pool: Path, hidden: list[str]) -> None:
    """Remove hidden files a refill killed mid-way left (another worker's refill in progress
    is younger than STALE)."""
    for name in hidden:
        with contextlib.suppress(OSError):
            if time.time() - os.stat(pool / name).st_mtime > STALE:
                os.unlink(pool / name)


def refill(directory: Path, size: int = SIZE) -> int:
    """Top `directory`'s pool up to `size` files holding the journal header, made durable
    (their fsyncs in parallel, then one of the pool directory, so that a client's own fsync
    commits neither their blocks nor their names). Returns how many were made. Any thread;
    never on a run's critical path."""
    pool = directory / POOL
    try:
        names = os.listdir(pool)
        have = sum(1 for name in names if not name.startswith("."))
        _drop_stale(pool, [name for name in names if name.startswith(".")])
    except FileNotFoundError:
        if not directory.is_dir():
            return 0  # the store is gone: making it again is not ours to do
        with contextlib.suppress(FileExistsError):
            os.mkdir(pool, DIR_MODE)
        have = 0
    # made under a hidden name (take() skips those) and shown once its header is written:
    # a client must never find a file the header is still being written to
    made: list[tuple[Path, int]] = []
    try:
        for _ in range(size - have):
            name = pool / ("." + os.urandom(8).hex())
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            except FileExistsError:
                continue
            except OSError:
                break  # disk full, removed...: clients create their files themselves
            made.append((name, fd))
            if os.write(fd, MAGIC) != len(MAGIC):
                raise OSError("short write")
        failed = sync_journals([fd for _, fd in made])
    except OSError:
        failed = dict.fromkeys(range(len(made)), "")
    finally:
        for _, fd in made:
            os.close(fd)
    shown = 0
    for k, (name, _) in enumerate(made):
        with contextlib.suppress(OSError):
            if k in failed:
                os.unlink(name)
            else:
                os.rename(name, name.with_name(name.name[1:]))
                shown += 1
    if shown:
        fd = os.open(pool, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return shown
