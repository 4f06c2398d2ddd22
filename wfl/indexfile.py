"""The index file's layout (`<dir>/index`, see index.py): what a listing reads of it, and how it
is written.

MAGIC, a 4-byte length, then the head (msgpack: the run ids joined by NUL, each journal's
mtime_ns and size when summarized, each run's created_at, and where each summary and each JSON
text ends), then the summaries back to back, then the JSON texts back to back. A listing reads
the head and only the parts it needs (pread): the newest 50 of 10,000 runs need 50 summaries,
not the file's 10 MB. Anything that does not add up makes the index empty: rebuilt from the
journals.
"""

from __future__ import annotations

import contextlib
import os
import struct
from typing import TYPE_CHECKING, Any, BinaryIO

from . import journal
from .frames import decode_all

if TYPE_CHECKING:
    from .index import Fresh

INDEX_NAME = "index"
# 3: summaries packed each; 4: columns, summaries and texts back to back (the magic says which);
# 5: as 4, without the journals that hold no record (4 lists them as broken runs: unborn.py)
MAGIC = b"WFLI\x00\x05\r\n"
_HEAD_LEN = struct.Struct("<I")


class Cache:
    """The index as loaded: its columns, and where in the file the summaries (back to back)
    and then the JSON texts (json_of, back to back) are. Those are read when needed: the
    newest 50 of 10,000 runs need 50 summaries, not the file's 10 MB."""

    def __init__(
        self,
        ids: list[str],
        mtime: list[int],
        size: list[int],
        created: list[float],
        ends: list[int],
        jends: list[int],
        file: BinaryIO | None = None,
        base: int = 0,
    ) -> None:
        self.ids, self.mtime, self.size, self.created = ids, mtime, size, created
        self.ends, self.jends = ends, jends
        self._file, self._base = file, base  # the summaries start at base, the texts after
        self._blob: bytes | None = None
        self._jblob: bytes | None = None
        self._texts_at = ends[-1] if ends else 0  # (from base)

    @classmethod
    def empty(cls) -> Cache:
        return cls([], [], [], [], [], [])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def _read(self, offset: int, length: int) -> bytes:
        if self._file is None or length <= 0:
            return b""
        return os.pread(self._file.fileno(), length, self._base + offset)

    @property
    def blob(self) -> bytes:
        if self._blob is None:
            self._blob = self._read(0, self.ends[-1] if self.ends else 0)
        return self._blob

    @property
    def jblob(self) -> bytes:
        if self._jblob is None:
            self._jblob = self._read(
                self.ends[-1] if self.ends else 0, self.jends[-1] if self.jends else 0
            )
        return self._jblob

    def read_all(self) -> None:
        """Read the summaries and texts whole (before copying most of them)."""
        self._blob, self._jblob = self.blob, self.jblob

    def positions(self) -> dict[str, int]:
        return dict(zip(self.ids, range(len(self.ids)), strict=True))

    def packed(self, i: int) -> bytes:
        start = self.ends[i - 1] if i else 0
        if self._blob is not None:
            return self._blob[start : self.ends[i]]
        return self._read(start, self.ends[i] - start)

    def text(self, i: int) -> bytes:
        start = self.jends[i - 1] if i else 0
        if self._jblob is not None:
            return self._jblob[start : self.jends[i]]
        return self._read(self._texts_at + start, self.jends[i] - start)

    def texts(self, wanted: list[int] | None) -> dict[int, str]:
        """The JSON texts at `wanted` (None: all); a damaged one reads as something else."""
        if wanted is not None:
            return {i: self.text(i).decode("ascii", "replace") for i in wanted}
        whole = self.jblob.decode("ascii", "replace")  # (json_of writes ASCII only)
        starts = [0, *self.jends[:-1]]
        return dict(enumerate(map(whole.__getitem__, map(slice, starts, self.jends))))

    def unpack(self, i: int) -> Any:
        """The summary record at `i`, or None if it does not read."""
        try:
            return journal.decode(self.packed(i), refuse_timestamps=False)
        except Exception:
            return None

    def unpack_all(self) -> list[Any]:
        """Every summary record, in one pass over the blob when it reads whole (a record read
        from the wrong bytes names another run: _cached checks that)."""
        try:
            records = decode_all(self.blob)
            if len(records) == len(self.ids):
                return records
        except Exception:
            pass
        return [self.unpack(i) for i in range(len(self.ids))]


def load(store: Any) -> Cache:
    try:
        f = open(store.dir / INDEX_NAME, "rb")  # noqa: SIM115  (the Cache holds it open)
    except OSError:
        return Cache.empty()  # none yet: built from the journals
    try:
        start = len(MAGIC) + _HEAD_LEN.size
        first = f.read(start)
        if not first.startswith(MAGIC):
            f.close()
            return Cache.empty()  # older or foreign: rebuilt from the journals
        (head_len,) = _HEAD_LEN.unpack_from(first, len(MAGIC))
        head = journal.decode(f.read(head_len), refuse_timestamps=False)
        ids = head["ids"].split("\0") if head["ids"] else []
        ends, jends = head["ends"], head["jends"]
        cache = Cache(ids, head["mtime"], head["size"], head["created"], ends, jends, f,
                      start + head_len)  # fmt: skip
        n = len(ids)
        total = start + head_len + (ends[-1] + jends[-1] if n else 0)
        if any(len(c) != n for c in (cache.mtime, cache.size, cache.created, ends, jends)) or (
            os.fstat(f.fileno()).st_size != total
        ):
            f.close()
            return Cache.empty()
        return cache
    except Exception:
        f.close()
        return Cache.empty()  # unreadable: rebuild from the journals


def save(store: Any, cache: Cache, ids: list[str], fresh: dict[str, Fresh]) -> None:
    """Write the index for the runs `ids`: fresh entries, else the cache's."""
    cache.read_all()
    pos = cache.positions()
    keep: list[str] = []
    columns: tuple[list[int], list[int], list[float], list[int], list[int]] = ([], [], [], [], [])
    mtime, size, created, ends, jends = columns
    parts: list[bytes] = []
    texts: list[bytes] = []
    end = jend = 0
    for run_id in ids:
        entry = fresh.get(run_id)
        if entry is not None:
            m, s, c, packed, text = entry
        else:
            i = pos.get(run_id)
            if i is None:
                continue  # not looked at (a listing of the newest): the next one adds it
            m, s, c, packed, text = (cache.mtime[i], cache.size[i], cache.created[i],
                                     cache.packed(i), cache.text(i))  # fmt: skip
        keep.append(run_id)
        mtime.append(m)
        size.append(s)
        created.append(c)
        end += len(packed)
        ends.append(end)
        parts.append(packed)
        jend += len(text)
        jends.append(jend)
        texts.append(text)
    head = journal.pack({"ids": "\0".join(keep), "mtime": mtime, "size": size,
                         "created": created, "ends": ends, "jends": jends})  # fmt: skip
    path = store.dir / INDEX_NAME
    tmp = store.dir / f".{INDEX_NAME}.{os.getpid()}.tmp"
    with contextlib.suppress(OSError):  # a read-only directory still lists, just slower
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + _HEAD_LEN.pack(len(head)) + head)
            f.writelines(parts)  # (not joined: 10,000 runs' 10 MB would be copied once more)
            f.writelines(texts)
        os.replace(tmp, path)  # a cache: no fsync, a torn one is just rebuilt
