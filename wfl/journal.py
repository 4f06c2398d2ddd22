"""One run's append-only journal file: framed msgpack records, durable appends, safe reads.

File layout: an 8-byte header (MAGIC), then frames. A frame is
`length (4 bytes, big-endian) | crc32 of payload (4 bytes) | payload (msgpack map)`.
A frame that is cut short or fails its checksum at the end of the file is a torn tail (a
crash mid-append): it is ignored on read and cut off before the next append. Bad bytes
followed by a good frame are corruption and raise JournalCorrupt naming file and offset.

Writers (the worker driving the run, and `wfl cancel` / `send-event` from other processes)
serialize on flock() of the journal file itself; the worker learns of records others appended
because the file grew past the offset it last wrote.

This is the only module that imports msgpack.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .errors import JournalCorrupt, JournalWriteError, SerializationError

MAGIC = b"WFLJ\x00\x01\r\n"  # format version 1; \r\n catches text-mode mangling
_FRAME = struct.Struct(">II")
MAX_RECORD = 64 * 1024 * 1024  # no record is bigger; a larger length field is garbage
FILE_MODE = 0o600

Record = dict[str, Any]


def encode(value: Any) -> bytes:
    """msgpack bytes of a user's `value`, checked to read back (so a dict with tuple keys or
    an ext type is refused now, not lost later); SerializationError names the bad type."""
    data = _pack(value)
    try:
        decode(data)
    except Exception as exc:
        raise SerializationError(f"value does not read back from msgpack: {exc}") from None
    return data


def _pack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(_describe_unserializable(value, exc)) from None


def decode(data: bytes, *, refuse_timestamps: bool = True) -> Any:
    """Inverse of encode. Never executes code: ext types are refused, sizes bounded.
    refuse_timestamps=False skips the walk for inert Timestamp objects (for big caches)."""
    value = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_refuse_ext)
    # msgpack decodes ext type -1 (Timestamp) without asking ext_hook: refuse it too, looking
    # only when its byte patterns occur at all
    if (
        refuse_timestamps
        and any(marker in data for marker in _TIMESTAMP_MARKERS)
        and _has_timestamp(value)
    ):
        raise ValueError("unexpected msgpack timestamp")
    return value


_TIMESTAMP_MARKERS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")


def _has_timestamp(value: Any) -> bool:
    if isinstance(value, msgpack.Timestamp):
        return True
    if isinstance(value, list):
        return any(_has_timestamp(v) for v in value)
    if isinstance(value, dict):
        return any(_has_timestamp(k) or _has_timestamp(v) for k, v in value.items())
    return False


def _refuse_ext(code: int, data: bytes) -> Any:
    raise ValueError(f"unexpected msgpack extension type {code}")


def _describe_unserializable(value: Any, exc: Exception) -> str:
    bad = _find_unserializable(value)
    if bad is not None:
        return f"value of type {type(bad).__name__} is not serializable (msgpack types only)"
    return f"value is not serializable: {exc}"


def _find_unserializable(value: Any) -> Any | None:
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return None
    if isinstance(value, list | tuple):
        for item in value:
            bad = _find_unserializable(item)
            if bad is not None:
                return bad
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            for part in (key, item):
                bad = _find_unserializable(part)
                if bad is not None:
                    return bad
        return None
    return value


def frame(record: Record) -> bytes:
    """One framed record; refused (SerializationError) unless it reads back."""
    payload = encode(record)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def frame_checked_values(record: Record) -> bytes:
    """frame() for a record whose user values each passed encode() already (the engine's
    hot path): the read-back check is not repeated."""
    payload = _pack(record)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass
class ReadResult:
    records: list[Record]
    end: int  # offset just past the last good frame
    torn: int  # bytes of torn tail after `end` (0 when the file ends cleanly)


def parse(data: bytes, *, start: int, path: str, base: int = 0) -> ReadResult:
    """Decode frames of `data` from `start` (a frame boundary); `data[0]` is at file offset
    `base`, and the offsets in the result and in errors are file offsets."""
    ends = _frame_ends(data, start)
    records = _decode_frames(data, start, ends)
    if records is None:  # a frame that passed its checksum does not decode: find which
        return _parse_frame_by_frame(data, start=start, path=path, base=base)
    pos = ends[-1] if ends else start
    size = len(data)
    if pos < size:
        if _good_frame_after(data, pos + 1):
            raise JournalCorrupt(path, base + pos, "bad record followed by good ones")
        return ReadResult(records, base + pos, size - pos)
    return ReadResult(records, base + pos, 0)


def _frame_ends(data: bytes, pos: int) -> list[int]:
    """End offsets of the frames from `pos` whose length and checksum are right, up to the
    first one that is not. (Decoding is left to _decode_frames, which decodes them all in
    one pass: a per-frame decode made reading 100,000 records cost ~0.4 s.)"""
    ends: list[int] = []
    size = len(data)
    view = memoryview(data)
    unpack_from, crc32, header = _FRAME.unpack_from, zlib.crc32, _FRAME.size
    while pos + header <= size:
        length, crc = unpack_from(data, pos)
        body = pos + header
        end = body + length
        if length > MAX_RECORD or end > size or crc32(view[body:end]) != crc:
            break
        ends.append(end)
        pos = end
    return ends


def _decode_frames(data: bytes, start: int, ends: list[int]) -> list[Record] | None:
    """The records of the frames ending at `ends`, or None unless each payload is exactly
    one record (a map with "t"), with no extension type and no Timestamp, as decode()
    requires of each."""
    if not ends:
        return []
    view = memoryview(data)
    header = _FRAME.size
    parts = []
    bounds: list[int] = []  # where each payload ends within the joined payloads
    total, pos = 0, start
    for end in ends:
        parts.append(view[pos + header : end])
        total += end - pos - header
        bounds.append(total)
        pos = end
    payloads = b"".join(parts)
    unpacker = msgpack.Unpacker(
        raw=False, strict_map_key=False, ext_hook=_refuse_ext, max_buffer_size=max(total, 1)
    )
    unpacker.feed(payloads)
    records: list[Record] = []
    tell = unpacker.tell
    try:
        for record, bound in zip(unpacker, bounds, strict=False):
            if tell() != bound or type(record) is not dict or "t" not in record:
                return None
            records.append(record)
    except Exception:
        return None
    if len(records) != len(bounds):
        return None
    for marker in _TIMESTAMP_MARKERS:  # rare: walk only the records holding the pattern
        at = payloads.find(marker)
        while at >= 0:
            if _has_timestamp(records[bisect.bisect_right(bounds, at)]):
                return None
            at = payloads.find(marker, at + 1)
    return records


def _parse_frame_by_frame(data: bytes, *, start: int, path: str, base: int = 0) -> ReadResult:
    records: list[Record] = []
    pos = start
    size = len(data)
    while pos < size:
        record, nxt = _frame_at(data, pos)
        if record is None:
            if _good_frame_after(data, pos + 1):
                raise JournalCorrupt(path, base + pos, "bad record followed by good ones")
            return ReadResult(records, base + pos, size - pos)
        records.append(record)
        pos = nxt
    return ReadResult(records, base + pos, 0)


def _frame_at(data: bytes, pos: int) -> tuple[Record | None, int]:
    if pos + _FRAME.size > len(data):
        return None, pos
    length, crc = _FRAME.unpack_from(data, pos)
    body = pos + _FRAME.size
    if length > MAX_RECORD or body + length > len(data):
        return None, pos
    payload = data[body : body + length]
    if zlib.crc32(payload) != crc:
        return None, pos
    try:
        record = decode(payload)
    except Exception:
        return None, pos
    if not isinstance(record, dict) or "t" not in record:
        return None, pos
    return record, body + length


# A frame's payload is a msgpack map, so its 9th byte is a map marker: find candidates at C
# speed, then check each one properly.
_CANDIDATE = rb"(?s)(?=.{8}[\x80-\x8f\xde\xdf])"


def _good_frame_after(data: bytes, pos: int) -> bool:
    # Only on the error path (torn tail or corruption): is there a valid frame after `pos`?
    for match in re.finditer(_CANDIDATE, data[pos:]):
        if _frame_at(data, pos + match.start())[0] is not None:
            return True
    return False


def read(path: Path) -> ReadResult:
    """All good records of the journal at `path`. Raises JournalCorrupt, FileNotFoundError."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):  # crashed while creating: header itself is torn
            return ReadResult([], len(data), 0)
        raise JournalCorrupt(str(path), 0, "not a wfl journal (bad header)")
    return parse(data, start=len(MAGIC), path=str(path))


def create(path: Path, records: Iterable[Record]) -> None:
    """Create a new journal holding `records`, durably and whole: it is written under a
    temporary name and linked into place, so no reader ever sees it empty or half written,
    and a crash leaves at most a hidden temporary file. Fails if `path` exists."""
    data = MAGIC + b"".join(frame(r) for r in records)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except OSError as exc:
        raise JournalWriteError(f"cannot create journal {path}: {exc.strerror}") from None
    try:
        try:
            _write_all(fd, data, path, "write new")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(tmp, path)  # atomic, and never replaces: FileExistsError if the run exists
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            raise
        raise JournalWriteError(f"cannot create journal {path}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, path: Path, verb: str = "append to") -> None:
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

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise JournalWriteError(f"cannot open journal {path}: {exc.strerror}") from None
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

    def _read_locked(self) -> list[Record]:
        data = self._read_from(0)
        if not data.startswith(MAGIC):
            if MAGIC.startswith(data):  # creation was cut short: repair the header
                os.ftruncate(self._fd, 0)
                os.pwrite(self._fd, MAGIC, 0)
                os.fsync(self._fd)
                self.end = len(MAGIC)
                return []
            raise JournalCorrupt(str(self.path), 0, "not a wfl journal (bad header)")
        result = parse(data, start=len(MAGIC), path=str(self.path))
        self._cut(result)
        return result.records

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


def delete(path: Path, check: Callable[[list[Record]], None]) -> None:
    """Under the journal's lock, let `check` look at the records (it raises to refuse), then
    delete the file. A writer that waited for the lock meanwhile finds it deleted (update()
    raises FileNotFoundError) instead of appending to a file no longer there."""
    writer = JournalWriter(path)
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


def update(path: Path, decide: Callable[[list[Record]], list[Record]]) -> list[Record]:
    """For one-off writers such as `wfl cancel`: under the journal's lock, read every record,
    let `decide` look at them and return what to append (it may raise to refuse), append it
    durably. Returns the appended records. FileNotFoundError if the journal is (or, while
    this waited for the lock, was) deleted."""
    writer = JournalWriter(path)
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


def payloads(framed: bytes) -> list[bytes]:
    """The msgpack payloads of frames this process made with `frame()` (no checks: they
    never left memory). Stores that keep one record per row use this."""
    out = []
    pos = 0
    while pos < len(framed):
        length, _ = _FRAME.unpack_from(framed, pos)
        pos += _FRAME.size
        out.append(framed[pos : pos + length])
        pos += length
    return out


def pack(value: Any) -> bytes:
    """msgpack bytes of wfl's own data (summaries): no read-back check."""
    return _pack(value)


FRAME_OVERHEAD = _FRAME.size
