"""Journal records as bytes: msgpack encoding with read-back checks, and frames.

A frame is `length (4 bytes, big-endian) | crc32 of payload (4 bytes) | payload (msgpack
map)`. `parse` turns bytes into records and tells a torn tail (bad bytes at the end: a crash
mid-append) from corruption (bad bytes followed by a good frame), which raises JournalCorrupt
naming file and offset. journal.py puts frames in files; stores that keep one record per row
use the payloads directly.

This is the only module that imports msgpack.
"""

from __future__ import annotations

import bisect
import re
import struct
import threading
import zlib
from typing import Any, NamedTuple

import msgpack

from .errors import JournalCorrupt, SerializationError

_FRAME = struct.Struct(">II")
MAX_RECORD = 64 * 1024 * 1024  # no record is bigger; a larger length field is garbage


Record = dict[str, Any]


def encode(value: Any) -> bytes:
    """msgpack bytes of a user's `value`, checked to read back (so a dict with tuple keys or
    an ext type is refused now, not lost later); SerializationError names the bad type."""
    return roundtrip(value)[0]


def roundtrip(value: Any) -> tuple[bytes, Any]:
    """encode(value), and what it reads back as (tuples become lists): the check's own
    decoding, so that a caller wanting both decodes once."""
    data = _pack(value)
    try:
        return data, decode(data)
    except Exception as exc:
        raise SerializationError(f"value does not read back from msgpack: {exc}") from None


def _pack(value: Any) -> bytes:
    try:
        return _packer().pack(value)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(_describe_unserializable(value, exc)) from None


_LOCAL = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's Packer: packb() builds one (and its buffer) per call, which was half of
    the cost of packing a small record. A Packer resets itself when a value fails to pack."""
    try:
        return _LOCAL.packer
    except AttributeError:
        packer = _LOCAL.packer = msgpack.Packer(use_bin_type=True)
        return packer


def decode(data: bytes, *, refuse_timestamps: bool = True) -> Any:
    """Inverse of encode. Never executes code: ext types are refused, sizes bounded.
    refuse_timestamps=False skips the walk for inert Timestamp objects (for big caches)."""
    value = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_refuse_ext)
    # msgpack decodes ext type -1 (Timestamp) without asking ext_hook: refuse it too, looking
    # only when its byte patterns occur at all
    if (
        refuse_timestamps
        and (b"\xd6\xff" in data or b"\xd7\xff" in data or b"\xc7\x0c\xff" in data)
        and _has_timestamp(value)
    ):
        raise ValueError("unexpected msgpack timestamp")
    return value


def _unpack_all(data: bytes) -> tuple[list[Any], int]:
    """The whole values packed back to back in `data` (decode's rules, timestamps left
    inert), and how many bytes they take (the Unpacker waits for more where one is cut)."""
    reader = msgpack.Unpacker(raw=False, strict_map_key=False, ext_hook=_refuse_ext,
                              max_buffer_size=max(len(data), 1))  # fmt: skip
    reader.feed(data)
    values = list(reader)
    return values, reader.tell()


def decode_all(data: bytes) -> list[Any]:
    """The values packed back to back in `data`, in one pass (decode's rules, timestamps
    left inert: for caches)."""
    return _unpack_all(data)[0]


def decode_stream(data: bytes) -> list[Any]:
    """The values packed back to back in `data` (PostgreSQL keeps an append's records in one
    row so), with decode's rules; ValueError if bytes at the end are not a whole value."""
    values, used = _unpack_all(data)
    if used != len(data):
        raise ValueError(f"its last {len(data) - used} bytes are not a whole value")
    if any(m in data for m in _TIMESTAMP_MARKERS) and _has_timestamp(values):
        raise ValueError("unexpected msgpack timestamp")
    return values


_TIMESTAMP_MARKERS = (b"\xd6\xff", b"\xd7\xff", b"\xc7\x0c\xff")  # (decode tests them inline)


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


class ReadResult(NamedTuple):
    """(A NamedTuple, not a dataclass: importing dataclasses costs `wfl status` ~8 ms.)"""

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
