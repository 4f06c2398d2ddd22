"""Empty journal files made ahead of time, so that starting a run creates no inode.

Creating a file is the dearest step of `Client.start` on a directory store: measured on this
project's ext4 disk, open(O_CREAT) took 0.06-0.1 ms when the disk was quiet and ~1 ms while
other processes created files, before two fsyncs. A worker keeps a few empty files ready in
`<dir>/pool/` (off any run's critical path: after news of new runs, in an I/O thread); a
client takes one by renaming it to its journal's temporary name (rename is atomic: of two
clients racing for a file one gets ENOENT and tries the next) and then goes on exactly as with
a file it created: write, fsync, link into place, unlink the temporary name, fsync the
directory. With no worker (no pool) it creates the file, as before.

What a crash can leave: a pool file is an empty file with a name no listing reads (not a run:
`pool/` holds nothing else, and runs are `<id>.journal` in the directory itself); a taken one
is the temporary file journal.create has always left when killed mid-way (hidden, never a
run). A file is used only if it is still empty with one link: should a file system ever bring
a pool name back beside a journal made from its inode after a power loss (ext4 cannot: the
rename and the link are in one directory fsync's commit), that name is dropped, not reused.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

POOL = "pool"  # the subdirectory
SIZE = 8  # files kept ready (a burst of starts beyond it creates files, as without a pool)
FILE_MODE = 0o600
DIR_MODE = 0o700


def take(directory: Path, tmp: Path) -> int | None:
    """A pool file of `directory`, renamed to `tmp` and opened for writing; None if the pool
    is empty (or missing)."""
    pool = directory / POOL
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
            os.rename(pool / name, tmp)
        except OSError:
            continue  # taken by another client meanwhile (ENOENT)
        try:
            fd = os.open(tmp, os.O_WRONLY)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            continue
        st = os.fstat(fd)
        if st.st_size == 0 and st.st_nlink == 1:
            return fd
        os.close(fd)  # not a free file (see the module docstring): drop this name only
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return None


def refill(directory: Path, size: int = SIZE) -> int:
    """Top `directory`'s pool up to `size` empty files, made durable (one sync of the pool
    directory, so that a client's own fsync does not commit their creation). Returns how
    many were made. Any thread; never on a run's critical path."""
    pool = directory / POOL
    try:
        have = len(os.listdir(pool))
    except FileNotFoundError:
        if not directory.is_dir():
            return 0  # the store is gone: making it again is not ours to do
        with contextlib.suppress(FileExistsError):
            os.mkdir(pool, DIR_MODE)
        have = 0
    made = 0
    for _ in range(size - have):
        name = pool / os.urandom(8).hex()
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            continue
        except OSError:
            break  # disk full, removed...: clients create their files themselves
        os.close(fd)
        made += 1
    if made:
        fd = os.open(pool, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return made
