"""Whether one fsync of a new file also makes its name durable, on the file system at hand.

POSIX asks for an fsync of the directory as well (fsync(2): "Calling fsync() does not
necessarily ensure that the entry in the directory containing the file has also reached
disk"), and that is what wfl does wherever it does not know better. It knows better on ext4
(ext3) and XFS, and there the directory's fsync is not free: on Linux 6.x ext4 answers an
fsync of a directory by committing its journal's running transaction, whatever is in it (a
worker's attempt record, another program's writes), ~0.2-0.6 ms measured here after the
file's own commit (bench/pickup.py, issue 16).

Why the file's fsync is enough there, for a name made by link() (or rename()) before it:
  - ext4 (and ext3, run by the ext4 driver): link() changes the inode (its link count) in the
    same journal handle that adds the directory entry, which records that transaction as the
    inode's i_sync_tid; fsync() of the file commits up to the inode's i_sync_tid, so the
    entry is committed with (or before) the file's data and size.
  - XFS: link() joins the inode to the transaction that adds the entry (its link count); an
    fsync forces the log up to the inode's last commit, which includes it.
Other file systems (btrfs, tmpfs, NFS, FUSE...) get the directory fsync as before.

The answer is looked up once per device per process, in /proc/self/mountinfo (~30 us).
"""

from __future__ import annotations

import os

# file systems whose fsync of a file commits the transaction that linked it (see above)
LINKS_WITH_FILE = frozenset({"ext4", "ext3", "xfs"})

_known: dict[int, bool] = {}


def file_sync_covers_link(st_dev: int) -> bool:
    """Whether fsync of a file on device `st_dev` makes a name linked to it before durable."""
    known = _known.get(st_dev)
    if known is None:
        known = _known[st_dev] = fs_type(st_dev) in LINKS_WITH_FILE
    return known


def fs_type(st_dev: int) -> str:
    """The file system type of the mount that `st_dev` belongs to ('' if not found)."""
    want = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""  # not Linux, or no /proc: the directory gets its fsync
    found = ""
    for line in lines:
        # "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=..."
        fields = line.split(" ")
        if len(fields) > 2 and fields[2] == want:
            _, sep, rest = line.partition(" - ")
            kind = rest.split(" ", 1)[0] if sep else ""
            if found and kind != found:
                return ""  # one device mounted as two types (odd): take no chance
            found = kind
    return found


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make the names in `directory` durable (where a file's own fsync does not: above)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
