"""Tests of wfl/journal.py: framing, torn tails, corruption, msgpack safety, locking, durability."""

from __future__ import annotations

import bisect
import datetime
import errno
import json
import os
import random
import signal
import stat
import struct
import subprocess
import sys
import tracemalloc
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest

from wfl import journal
from wfl.errors import JournalCorrupt, JournalWriteError, SerializationError, WflError
from wfl.journal import MAGIC, MAX_RECORD, JournalWriter

REPO_ROOT = Path(journal.__file__).resolve().parent.parent
HEADER = struct.Struct(">II")


# --------------------------------------------------------------------------------------------
# helpers


def make_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"t": "step", "n": i, "pad": rng.randbytes(rng.randrange(0, 200))} for i in range(n)]


def raw_frame(payload: bytes, *, crc: int | None = None, length: int | None = None) -> bytes:
    """A frame built independently of journal.frame, so tests can forge bad ones."""
    if crc is None:
        crc = zlib.crc32(payload)
    if length is None:
        length = len(payload)
    return HEADER.pack(length, crc) + payload


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def frame_bounds(records: list[dict[str, Any]]) -> list[int]:
    """File offsets of each frame start, plus the end of the file, for create(records)."""
    bounds = [len(MAGIC)]
    for record in records:
        bounds.append(bounds[-1] + len(raw_frame(pack(record))))
    return bounds


def new_journal(tmp_path: Path, records: list[dict[str, Any]], name: str = "run.wflj") -> Path:
    path = tmp_path / name
    journal.create(path, records)
    return path


def open_writer(path: Path) -> JournalWriter:
    writer = JournalWriter(path)
    writer.read_all()
    return writer


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


class OsWithPwrite:
    """Stands in for the `os` module inside wfl.journal, with pwrite replaced."""

    def __init__(self, pwrite: Any) -> None:
        self.pwrite = pwrite

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


# --------------------------------------------------------------------------------------------
# round trips


def test_create_then_read_returns_the_same_records(tmp_path: Path) -> None:
    records = make_records(30)
    path = new_journal(tmp_path, records)

    result = journal.read(path)

    assert result.records == records
    assert result.end == path.stat().st_size
    assert result.torn == 0


def test_create_writes_header_then_one_frame_per_record(tmp_path: Path) -> None:
    records = make_records(5)
    path = new_journal(tmp_path, records)

    assert path.read_bytes() == MAGIC + b"".join(raw_frame(pack(r)) for r in records)


def test_create_with_no_records_reads_as_empty_journal(tmp_path: Path) -> None:
    path = new_journal(tmp_path, [])

    assert path.read_bytes() == MAGIC
    assert journal.read(path).records == []


ALL_TYPES_RECORD = {
    "t": "all-types",
    "none": None,
    "true": True,
    "false": False,
    "zero": 0,
    "small": 7,
    "negative": -123456,
    "big": 2**64 - 1,
    "most-negative": -(2**63),
    "float": 3.25,
    "neg-float": -1e300,
    "inf": float("inf"),
    "str": "héllo wörld ✓ 日本",
    "empty-str": "",
    "bytes": bytes(range(256)),
    "empty-bytes": b"",
    "list": [1, "two", 3.0, None, [b"four"], {"five": 5}],
    "empty-list": [],
    "nested": {"a": {"b": {"c": [1, {"d": b"\x00"}]}}, "e": {}},
    7: "int key",
    b"bin": "bytes key",
}


def test_all_msgpack_types_survive_encode_and_decode() -> None:
    assert journal.decode(journal.encode(ALL_TYPES_RECORD)) == ALL_TYPES_RECORD


def test_all_msgpack_types_survive_a_journal_round_trip(tmp_path: Path) -> None:
    path = new_journal(tmp_path, [ALL_TYPES_RECORD])
    writer = open_writer(path)
    writer.append([ALL_TYPES_RECORD])
    writer.close()

    records = journal.read(path).records

    assert records == [ALL_TYPES_RECORD, ALL_TYPES_RECORD]
    assert type(records[0]["bytes"]) is bytes
    assert type(records[0]["str"]) is str
    assert records[0]["true"] is True


def test_tuples_are_stored_as_lists() -> None:
    assert journal.decode(journal.encode({"t": "x", "v": (1, (2, 3))})) == {
        "t": "x",
        "v": [1, [2, 3]],
    }


def test_writer_read_all_returns_existing_records_and_remembers_the_end(tmp_path: Path) -> None:
    records = make_records(10)
    path = new_journal(tmp_path, records)
    writer = JournalWriter(path)

    assert writer.read_all() == records
    assert writer.size() == path.stat().st_size
    writer.close()


def test_writer_appends_are_read_back_in_order(tmp_path: Path) -> None:
    records = make_records(20)
    path = new_journal(tmp_path, records[:5])
    writer = open_writer(path)

    writer.append(records[5:6])
    writer.append(records[6:15], sync=False)
    writer.append(records[15:])

    assert writer.size() == path.stat().st_size == frame_bounds(records)[-1]
    assert journal.read(path).records == records
    assert JournalWriter(path).read_all() == records
    writer.close()


def test_append_returns_nothing_when_no_one_else_wrote(tmp_path: Path) -> None:
    writer = open_writer(new_journal(tmp_path, make_records(3)))

    assert writer.append([{"t": "a"}]) == []
    assert writer.append([{"t": "b"}, {"t": "c"}]) == []
    writer.close()


def test_poll_returns_nothing_when_the_journal_is_unchanged(tmp_path: Path) -> None:
    writer = open_writer(new_journal(tmp_path, make_records(3)))
    writer.append([{"t": "mine"}])

    assert writer.poll() == []
    writer.close()


def test_append_of_no_records_leaves_the_file_unchanged(tmp_path: Path) -> None:
    path = new_journal(tmp_path, make_records(3))
    before = path.read_bytes()
    writer = open_writer(path)

    assert writer.append([]) == []
    assert path.read_bytes() == before
    writer.close()


def test_append_before_read_all_is_refused(tmp_path: Path) -> None:
    path = new_journal(tmp_path, make_records(3))
    before = path.read_bytes()
    writer = JournalWriter(path)

    with pytest.raises(RuntimeError, match="read_all"):
        writer.append([{"t": "x"}])
    assert path.read_bytes() == before
    writer.close()


def test_writer_on_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        JournalWriter(tmp_path / "missing.wflj")


def test_read_of_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        journal.read(tmp_path / "missing.wflj")


# --------------------------------------------------------------------------------------------
# serialization errors


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        pytest.param({"t": "x", "v": {1, 2}}, "set", id="set"),
        pytest.param({"t": "x", "v": datetime.datetime(2024, 1, 2)}, "datetime", id="datetime"),
        pytest.param({"t": "x", "v": [1, [2, object()]]}, "object", id="object-in-list"),
        pytest.param({"t": "x", "v": {"a": {"b": object()}}}, "object", id="object-in-dict"),
        pytest.param({"t": "x", "v": {"a": [datetime.date(2024, 1, 2)]}}, "date", id="date"),
        pytest.param({"t": "x", frozenset({1}): 1}, "frozenset", id="frozenset-key"),
        pytest.param({"t": "x", "v": 1 + 2j}, "complex", id="complex"),
    ],
)
def test_encode_of_unserializable_value_raises_serialization_error_naming_the_type(
    value: Any, type_name: str
) -> None:
    with pytest.raises(SerializationError, match=rf"\b{type_name}\b") as info:
        journal.encode(value)
    assert isinstance(info.value, WflError)


def test_encode_of_out_of_range_int_raises_serialization_error() -> None:
    with pytest.raises(SerializationError):
        journal.encode({"t": "x", "v": 2**64})


def test_append_of_unserializable_record_writes_nothing(tmp_path: Path) -> None:
    path = new_journal(tmp_path, make_records(3))
    before = path.read_bytes()
    writer = open_writer(path)

    with pytest.raises(SerializationError, match="set"):
        writer.append([{"t": "ok"}, {"t": "bad", "v": {1}}])

    assert path.read_bytes() == before
    writer.append([{"t": "after"}])
    assert journal.read(path).records[-1] == {"t": "after"}
    writer.close()


def test_create_with_unserializable_record_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "run.wflj"

    with pytest.raises(SerializationError, match="datetime"):
        journal.create(path, [{"t": "x", "v": datetime.datetime.now()}])

    assert not path.exists()


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"t": "step", "result": {(1, 2): "x"}}, id="tuple-dict-key"),
        pytest.param({"t": "step", "result": msgpack.ExtType(5, b"ab")}, id="ext-type"),
        pytest.param({"t": "step", "result": msgpack.Timestamp(1, 0)}, id="timestamp"),
    ],
)
def test_record_that_would_not_read_back_is_refused_by_append_not_silently_lost(
    tmp_path: Path, record: dict[str, Any]
) -> None:
    # Whatever append accepts must read back; otherwise a record the caller believes durable
    # is later taken for a torn tail and cut off (or, followed by records, makes the journal
    # corrupt).
    path = new_journal(tmp_path, [{"t": "start"}])
    writer = open_writer(path)

    try:
        writer.append([record])
    except SerializationError:
        assert journal.read(path).records == [{"t": "start"}]
    else:
        assert len(journal.read(path).records) == 2
    writer.close()


# --------------------------------------------------------------------------------------------
# file creation


def test_created_journal_is_mode_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = new_journal(tmp_path, make_records(2))
    finally:
        os.umask(old)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_created_journal_is_mode_0600_with_the_default_umask(tmp_path: Path) -> None:
    path = new_journal(tmp_path, [])

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_create_on_existing_path_raises_file_exists_and_leaves_the_file_intact(
    tmp_path: Path,
) -> None:
    path = new_journal(tmp_path, make_records(4))
    before = path.read_bytes()

    with pytest.raises(FileExistsError):
        journal.create(path, [{"t": "other"}])

    assert path.read_bytes() == before
    assert journal.read(path).records == make_records(4)


def test_create_does_not_overwrite_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"precious")

    with pytest.raises(FileExistsError):
        journal.create(path, [])

    assert path.read_bytes() == b"precious"


# --------------------------------------------------------------------------------------------
# torn tails


TORN_RECORDS = make_records(50, seed=1)
TORN_BOUNDS = frame_bounds(TORN_RECORDS)


def check_cut(path: Path, data: bytes, cut: int) -> None:
    """Journal `data` truncated at `cut`: read gives the whole records before the cut, a writer
    cuts the rest off, and an append lands right after the good prefix."""
    path.write_bytes(data[:cut])
    whole = bisect.bisect_right(TORN_BOUNDS, cut) - 1 if cut >= len(MAGIC) else 0
    good = TORN_RECORDS[:whole]
    good_end = TORN_BOUNDS[whole]

    result = journal.read(path)
    assert result.records == good, f"cut at {cut}"
    if cut >= len(MAGIC):
        assert result.end == good_end, f"cut at {cut}"
        assert result.torn == cut - good_end, f"cut at {cut}"

    writer = JournalWriter(path)
    try:
        assert writer.read_all() == good, f"cut at {cut}"
        assert path.stat().st_size == good_end, f"cut at {cut}"
        assert writer.size() == good_end
        new = {"t": "after-cut", "cut": cut}
        assert writer.append([new], sync=False) == []
    finally:
        writer.close()
    assert journal.read(path).records == [*good, new], f"cut at {cut}"


def test_truncation_at_every_offset_inside_the_last_record_drops_only_that_record(
    tmp_path: Path,
) -> None:
    data = new_journal(tmp_path, TORN_RECORDS, "full.wflj").read_bytes()
    path = tmp_path / "cut.wflj"

    for cut in range(TORN_BOUNDS[-2], TORN_BOUNDS[-1]):
        check_cut(path, data, cut)


def test_truncation_at_random_offsets_keeps_exactly_the_whole_records_before_the_cut(
    tmp_path: Path,
) -> None:
    data = new_journal(tmp_path, TORN_RECORDS, "full.wflj").read_bytes()
    path = tmp_path / "cut.wflj"
    rng = random.Random(20240601)
    cuts = [rng.randrange(0, len(data) + 1) for _ in range(200)]
    cuts += list(range(len(MAGIC) + 1))  # inside the header, and right after it

    for cut in cuts:
        check_cut(path, data, cut)


def test_torn_tail_left_by_another_process_is_cut_by_the_next_append(tmp_path: Path) -> None:
    records = make_records(5)
    path = new_journal(tmp_path, records)
    writer = open_writer(path)
    good_end = path.stat().st_size
    with path.open("ab") as f:  # another process died half way through an append
        f.write(journal.frame({"t": "crashed", "v": b"x" * 100})[:-30])

    assert journal.read(path).records == records
    assert writer.append([{"t": "mine"}]) == []

    assert journal.read(path).records == [*records, {"t": "mine"}]
    assert path.stat().st_size == good_end + len(journal.frame({"t": "mine"}))
    writer.close()


def test_torn_tail_left_by_another_process_is_cut_by_poll(tmp_path: Path) -> None:
    records = make_records(5)
    path = new_journal(tmp_path, records)
    writer = open_writer(path)
    good_end = path.stat().st_size
    with path.open("ab") as f:
        f.write(journal.frame({"t": "crashed"})[:5])

    assert writer.poll() == []
    assert path.stat().st_size == good_end == writer.size()
    writer.close()


GOOD_PAYLOAD = pack({"t": "looks-fine", "v": 1})

GARBAGE = {
    "random-bytes": random.Random(7).randbytes(300),
    "zeros": bytes(4096),
    "one-zero-byte": b"\x00",
    "partial-header": raw_frame(GOOD_PAYLOAD)[:5],
    "header-without-payload": raw_frame(GOOD_PAYLOAD)[:8],
    "partial-payload": raw_frame(GOOD_PAYLOAD)[:-1],
    "wrong-crc": raw_frame(GOOD_PAYLOAD, crc=zlib.crc32(GOOD_PAYLOAD) ^ 1),
    "payload-longer-than-length": raw_frame(GOOD_PAYLOAD, length=len(GOOD_PAYLOAD) - 1),
    "length-over-max-record": raw_frame(GOOD_PAYLOAD, length=MAX_RECORD + 1),
    "length-all-ones": raw_frame(GOOD_PAYLOAD, length=0xFFFFFFFF),
    "empty-payload": raw_frame(b""),
    "text": b"hello, this is not a frame\n",
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_after_the_last_record_is_a_torn_tail_ignored_then_cut(
    tmp_path: Path, garbage: bytes
) -> None:
    records = make_records(10)
    path = new_journal(tmp_path, records)
    good_end = path.stat().st_size
    with path.open("ab") as f:
        f.write(garbage)

    result = journal.read(path)
    assert result.records == records
    assert result.end == good_end
    assert result.torn == len(garbage)

    writer = open_writer(path)
    assert path.stat().st_size == good_end
    writer.append([{"t": "new"}])
    writer.close()
    assert journal.read(path).records == [*records, {"t": "new"}]


# --------------------------------------------------------------------------------------------
# corruption


CORRUPT_RECORDS = make_records(20, seed=3)
CORRUPT_BOUNDS = frame_bounds(CORRUPT_RECORDS)


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("index", [0, 1, 10, 18])
@pytest.mark.parametrize(
    "where",
    ["length-high-byte", "length-low-byte", "crc", "first-payload-byte", "last-payload-byte"],
)
def test_flipped_byte_in_a_record_followed_by_good_ones_is_corruption_at_that_frame(
    tmp_path: Path, index: int, where: str
) -> None:
    path = new_journal(tmp_path, CORRUPT_RECORDS)
    start, end = CORRUPT_BOUNDS[index], CORRUPT_BOUNDS[index + 1]
    offset = {
        "length-high-byte": start,
        "length-low-byte": start + 3,
        "crc": start + 5,
        "first-payload-byte": start + 8,
        "last-payload-byte": end - 1,
    }[where]
    flip(path, offset)

    with pytest.raises(JournalCorrupt) as info:
        journal.read(path)

    assert info.value.offset == start
    assert info.value.path == str(path)
    assert str(path) in str(info.value)
    assert f"byte {start}" in str(info.value)


def test_writer_refuses_a_corrupt_journal_and_leaves_it_untouched(tmp_path: Path) -> None:
    path = new_journal(tmp_path, CORRUPT_RECORDS)
    flip(path, CORRUPT_BOUNDS[5] + 10)
    before = path.read_bytes()

    writer = JournalWriter(path)
    with pytest.raises(JournalCorrupt) as info:
        writer.read_all()
    writer.close()
    with pytest.raises(JournalCorrupt):
        journal.update(path, lambda records: [{"t": "cancel"}])

    assert info.value.offset == CORRUPT_BOUNDS[5]
    assert path.read_bytes() == before


def test_corruption_in_records_another_process_appended_is_reported_at_its_file_offset(
    tmp_path: Path,
) -> None:
    path = new_journal(tmp_path, CORRUPT_RECORDS[:5])
    mine = open_writer(path)
    theirs = open_writer(path)
    theirs.append(CORRUPT_RECORDS[5:10])
    theirs.close()
    flip(path, CORRUPT_BOUNDS[6] + 9)
    before = path.read_bytes()

    with pytest.raises(JournalCorrupt) as info:
        mine.append([{"t": "mine"}])

    assert info.value.offset == CORRUPT_BOUNDS[6]
    assert f"byte {CORRUPT_BOUNDS[6]}" in str(info.value)
    assert path.read_bytes() == before
    mine.close()


def test_garbage_between_good_records_is_corruption(tmp_path: Path) -> None:
    records = make_records(4)
    path = tmp_path / "run.wflj"
    good = MAGIC + b"".join(raw_frame(pack(r)) for r in records[:2])
    path.write_bytes(good + bytes(16) + b"".join(raw_frame(pack(r)) for r in records[2:]))

    with pytest.raises(JournalCorrupt) as info:
        journal.read(path)

    assert info.value.offset == len(good)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"XXXXXXXX", id="wrong-magic"),
        pytest.param(b"WFLJ\x00\x02\r\n", id="unknown-version"),
        pytest.param(b"WFLJ\x00\x01\n", id="text-mode-mangled"),
        pytest.param(b"\x93\x01\x02\x03", id="plain-msgpack"),
    ],
)
def test_bad_header_is_corruption_at_offset_zero(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "run.wflj"
    path.write_bytes(header + b"".join(raw_frame(pack(r)) for r in make_records(3)))
    before = path.read_bytes()

    with pytest.raises(JournalCorrupt) as info:
        journal.read(path)
    assert info.value.offset == 0
    assert str(path) in str(info.value)
    assert "byte 0" in str(info.value)

    writer = JournalWriter(path)
    with pytest.raises(JournalCorrupt) as info:
        writer.read_all()
    writer.close()
    assert info.value.offset == 0
    assert path.read_bytes() == before


@pytest.mark.parametrize("size", range(len(MAGIC)))
def test_prefix_of_the_header_reads_as_empty_and_a_writer_repairs_it(
    tmp_path: Path, size: int
) -> None:
    path = tmp_path / "run.wflj"
    path.write_bytes(MAGIC[:size])  # crashed while creating

    assert journal.read(path).records == []

    writer = open_writer(path)
    assert path.read_bytes() == MAGIC
    writer.append([{"t": "first"}])
    writer.close()
    assert journal.read(path).records == [{"t": "first"}]


def test_journal_shrunk_by_another_tool_is_reported_not_overwritten(tmp_path: Path) -> None:
    records = make_records(5)
    path = new_journal(tmp_path, records)
    writer = open_writer(path)
    os.truncate(path, frame_bounds(records)[3])

    with pytest.raises(JournalCorrupt, match="truncated"):
        writer.append([{"t": "x"}])
    writer.close()
    assert journal.read(path).records == records[:3]


# --------------------------------------------------------------------------------------------
# msgpack safety


def journal_with_frame_between(tmp_path: Path, bad: bytes, *, followed: bool) -> Path:
    path = tmp_path / "run.wflj"
    data = MAGIC + raw_frame(pack({"t": "before"})) + bad
    if followed:
        data += raw_frame(pack({"t": "after"}))
    path.write_bytes(data)
    return path


NOT_RECORDS = {
    "ext-type": pack(msgpack.ExtType(42, b"os.system('echo pwned')")),
    "ext-type-inside-map": pack({"t": "x", "v": msgpack.ExtType(1, b"payload")}),
    "ext-type-as-t": pack({"t": msgpack.ExtType(3, b"")}),
    "list": pack(["t", "x"]),
    "int": pack(7),
    "str": pack("t"),
    "nil": pack(None),
    "map-without-t": pack({"type": "x"}),
    "map-with-bytes-t": pack({b"t": "x"}),
    "empty-map": pack({}),
    "map-then-trailing-bytes": pack({"t": "x"}) + b"\xc0",
    "truncated-map": pack({"t": "x", "v": "abcdef"})[:-2],
    "array32-claiming-4g-items": b"\xdd\xff\xff\xff\xff",
    "map32-claiming-4g-items": b"\xdf\xff\xff\xff\xff",
    "str32-claiming-4gb": b"\xdb\xff\xff\xff\xff" + b"t",
    "bin32-claiming-4gb": b"\xc6\xff\xff\xff\xff" + b"t",
    "deeply-nested": b"\x81\xa1t" + b"\x91" * 100_000 + b"\xc0",
}


@pytest.mark.parametrize("payload", NOT_RECORDS.values(), ids=NOT_RECORDS.keys())
def test_payload_that_is_not_a_plain_map_with_t_is_never_returned_as_a_record(
    tmp_path: Path, payload: bytes
) -> None:
    bad = raw_frame(payload)  # checksum is right: only the content is wrong

    tail = journal_with_frame_between(tmp_path, bad, followed=False)
    result = journal.read(tail)
    assert result.records == [{"t": "before"}]
    assert result.torn == len(bad)
    writer = open_writer(tail)
    writer.append([{"t": "next"}])
    writer.close()
    assert journal.read(tail).records == [{"t": "before"}, {"t": "next"}]

    tail.unlink()
    middle = journal_with_frame_between(tmp_path, bad, followed=True)
    with pytest.raises(JournalCorrupt) as info:
        journal.read(middle)
    assert info.value.offset == len(MAGIC) + len(raw_frame(pack({"t": "before"})))


def test_decode_refuses_ext_types_without_calling_anything() -> None:
    with pytest.raises(ValueError, match="extension type 42"):
        journal.decode(pack({"t": "x", "v": msgpack.ExtType(42, b"\x80\x04")}))


def test_decode_refuses_the_msgpack_timestamp_ext_type_too() -> None:
    # msgpack decodes ext type -1 (Timestamp) itself, without calling ext_hook; the journal
    # promises that ext types are refused, so such a record must not come back either.
    payload = pack({"t": "x", "at": msgpack.Timestamp(1_700_000_000, 0)})

    with pytest.raises(ValueError):  # noqa: PT011 - any refusal will do
        journal.decode(payload)


@pytest.mark.parametrize("length", [MAX_RECORD + 1, 0x7FFFFFFF, 0xFFFFFFFF])
@pytest.mark.parametrize("followed", [False, True], ids=["at-tail", "before-good-records"])
def test_length_field_larger_than_max_record_causes_no_huge_allocation(
    tmp_path: Path, length: int, followed: bool
) -> None:
    bad = raw_frame(b"\x81\xa1t\x01" + bytes(64), length=length)
    path = journal_with_frame_between(tmp_path, bad, followed=followed)

    tracemalloc.start()
    try:
        if followed:
            with pytest.raises(JournalCorrupt):
                journal.read(path)
        else:
            assert journal.read(path).records == [{"t": "before"}]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 1024 * 1024


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xdd\xff\xff\xff\xff", id="array32"),
        pytest.param(b"\xdf\xff\xff\xff\xff", id="map32"),
        pytest.param(b"\xdb\xff\xff\xff\xff", id="str32"),
        pytest.param(b"\xc6\xff\xff\xff\xff", id="bin32"),
        pytest.param(b"\xc9\xff\xff\xff\xff\x05", id="ext32"),
    ],
)
def test_msgpack_sizes_claimed_inside_a_payload_cause_no_huge_allocation(payload: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):  # noqa: PT011 - msgpack's own error types vary
            journal.decode(payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 1024 * 1024


# --------------------------------------------------------------------------------------------
# several writers


def test_append_returns_the_records_another_writer_appended_and_only_those(
    tmp_path: Path,
) -> None:
    path = new_journal(tmp_path, [{"t": "start"}])
    a = open_writer(path)
    b = open_writer(path)

    assert a.append([{"t": "a1"}]) == []
    assert b.append([{"t": "b1"}, {"t": "b2"}]) == [{"t": "a1"}]
    assert b.append([{"t": "b3"}]) == []
    assert a.append([{"t": "a2"}]) == [{"t": "b1"}, {"t": "b2"}, {"t": "b3"}]
    assert b.poll() == [{"t": "a2"}]
    assert a.poll() == []

    assert a.size() == b.size() == path.stat().st_size
    assert [r["t"] for r in journal.read(path).records] == [
        "start",
        "a1",
        "b1",
        "b2",
        "b3",
        "a2",
    ]
    a.close()
    b.close()


def test_poll_returns_only_the_records_appended_by_others(tmp_path: Path) -> None:
    path = new_journal(tmp_path, [{"t": "start"}])
    a = open_writer(path)
    b = open_writer(path)

    a.append([{"t": "a1"}])
    assert a.poll() == []
    b.append([{"t": "b1"}])
    assert a.poll() == [{"t": "b1"}]
    assert a.poll() == []
    a.close()
    b.close()


def test_append_frames_writes_pre_framed_records_and_returns_foreign_ones(
    tmp_path: Path,
) -> None:
    path = new_journal(tmp_path, [{"t": "start"}])
    a = open_writer(path)
    b = open_writer(path)
    b.append([{"t": "b1"}])

    payload = journal.frame({"t": "a1"}) + journal.frame({"t": "a2"})
    assert a.append_frames(payload) == [{"t": "b1"}]
    assert a.append_frames(b"") == []

    assert a.size() == path.stat().st_size
    assert b.poll() == [{"t": "a1"}, {"t": "a2"}]
    assert journal.read(path).records == [{"t": "start"}, {"t": "b1"}, {"t": "a1"}, {"t": "a2"}]
    a.close()
    b.close()


def test_writer_opened_later_sees_everything_appended_before(tmp_path: Path) -> None:
    path = new_journal(tmp_path, [{"t": "start"}])
    a = open_writer(path)
    a.append([{"t": "a1"}])
    a.append([{"t": "a2"}])

    assert JournalWriter(path).read_all() == [{"t": "start"}, {"t": "a1"}, {"t": "a2"}]
    a.close()


APPENDER = r"""
import json, random, sys
from pathlib import Path
from wfl.journal import JournalWriter

path, name, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng = random.Random(name)
writer = JournalWriter(path)
seen = [[r["w"], r["i"]] for r in writer.read_all()]
print("ready", flush=True)
sys.stdin.readline()
i = 0
while i < count:
    batch = [{"t": "rec", "w": name, "i": j} for j in range(i, min(count, i + rng.randint(1, 3)))]
    foreign = writer.append(batch, sync=rng.random() < 0.5)
    seen += [[r["w"], r["i"]] for r in foreign]
    seen += [[r["w"], r["i"]] for r in batch]
    i += len(batch)
seen += [[r["w"], r["i"]] for r in writer.poll()]
print(json.dumps(seen), flush=True)
"""


def test_four_processes_appending_at_once_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    path = new_journal(tmp_path, [{"t": "start", "w": "-", "i": -1}])
    names = ["p0", "p1", "p2", "p3"]
    count = 200
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, str(path), name, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for name in names
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        for proc in procs:  # all four are waiting: release them together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        views = []
        for proc in procs:
            out, _ = proc.communicate(timeout=30)
            assert proc.returncode == 0
            views.append([tuple(x) for x in json.loads(out)])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    records = journal.read(path).records
    keys = [(r["w"], r["i"]) for r in records]
    assert len(keys) == 1 + len(names) * count
    assert Counter(keys) == Counter([("-", -1)] + [(n, i) for n in names for i in range(count)])
    for name in names:
        assert [i for w, i in keys if w == name] == list(range(count))
    for view in views:  # what each writer was told is exactly the start of the file
        assert view == keys[: len(view)]


# --------------------------------------------------------------------------------------------
# disk full


def partial_then_enospc(err: int) -> Any:
    """pwrite that writes half of what it is given, then fails on the rest."""
    state = {"calls": 0}

    def pwrite(fd: int, data: Any, offset: int) -> int:
        state["calls"] += 1
        if state["calls"] == 1:
            return os.pwrite(fd, bytes(data)[: len(data) // 2], offset)
        raise OSError(err, os.strerror(err))

    return pwrite


def write_some_then_enospc(err: int) -> Any:
    """pwrite that gets part of the data onto the disk and then reports the error."""

    def pwrite(fd: int, data: Any, offset: int) -> int:
        os.pwrite(fd, bytes(data)[: max(1, len(data) - 3)], offset)
        raise OSError(err, os.strerror(err))

    return pwrite


@pytest.mark.parametrize("make_pwrite", [partial_then_enospc, write_some_then_enospc])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_disk_full_during_append_raises_and_leaves_the_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_pwrite: Any, err: int
) -> None:
    records = make_records(5)
    path = new_journal(tmp_path, records)
    writer = open_writer(path)
    writer.append([{"t": "before"}])
    before = path.read_bytes()
    monkeypatch.setattr(journal, "os", OsWithPwrite(make_pwrite(err)))

    with pytest.raises(JournalWriteError, match="disk full") as info:
        writer.append([{"t": "big", "v": b"x" * 5000}, {"t": "second"}])

    assert str(path) in str(info.value)
    assert path.read_bytes() == before
    assert journal.read(path).records == [*records, {"t": "before"}]

    monkeypatch.setattr(journal, "os", os)
    assert writer.append([{"t": "later"}]) == []
    writer.close()
    assert journal.read(path).records == [*records, {"t": "before"}, {"t": "later"}]


def test_other_write_error_during_append_names_the_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = new_journal(tmp_path, make_records(2))
    writer = open_writer(path)
    before = path.read_bytes()
    monkeypatch.setattr(journal, "os", OsWithPwrite(write_some_then_enospc(errno.EIO)))

    with pytest.raises(JournalWriteError, match=os.strerror(errno.EIO)):
        writer.append([{"t": "x"}])

    monkeypatch.setattr(journal, "os", os)
    assert path.read_bytes() == before
    writer.close()


@pytest.mark.parametrize("method", ["append", "append_frames"])
def test_records_of_other_writers_are_not_lost_when_an_append_fails_for_disk_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    path = new_journal(tmp_path, [{"t": "start"}])
    worker = open_writer(path)
    journal.update(path, lambda records: [{"t": "cancel"}])  # e.g. `wfl cancel`
    monkeypatch.setattr(journal, "os", OsWithPwrite(partial_then_enospc(errno.ENOSPC)))
    step = {"t": "step"}

    def failing_append() -> object:
        if method == "append":
            return worker.append([step])
        return worker.append_frames(journal.frame(step))

    with pytest.raises(JournalWriteError, match="disk full"):
        failing_append()

    monkeypatch.setattr(journal, "os", os)
    seen = worker.poll() + worker.append([{"t": "step"}])
    worker.close()
    assert seen == [{"t": "cancel"}]


def test_records_of_other_writers_are_not_lost_when_an_append_is_unserializable(
    tmp_path: Path,
) -> None:
    path = new_journal(tmp_path, [{"t": "start"}])
    worker = open_writer(path)
    journal.update(path, lambda records: [{"t": "cancel"}])

    with pytest.raises(SerializationError):
        worker.append([{"t": "step", "result": {1, 2}}])

    seen = worker.poll() + worker.append([{"t": "step", "result": None}])
    worker.close()
    assert seen == [{"t": "cancel"}]


# --------------------------------------------------------------------------------------------
# update()


def test_update_shows_decide_every_record_and_appends_what_it_returns(tmp_path: Path) -> None:
    records = make_records(6)
    path = new_journal(tmp_path, records)
    other = open_writer(path)
    other.append([{"t": "late"}])
    seen: list[list[dict[str, Any]]] = []

    def decide(existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen.append(existing)
        return [{"t": "cancel", "after": len(existing)}]

    appended = journal.update(path, decide)

    assert seen == [[*records, {"t": "late"}]]
    assert appended == [{"t": "cancel", "after": 7}]
    assert journal.read(path).records == [*records, {"t": "late"}, {"t": "cancel", "after": 7}]
    assert other.poll() == [{"t": "cancel", "after": 7}]
    other.close()


def test_update_returning_no_records_appends_nothing(tmp_path: Path) -> None:
    path = new_journal(tmp_path, make_records(3))
    before = path.read_bytes()

    assert journal.update(path, lambda records: []) == []
    assert path.read_bytes() == before


def test_update_whose_decide_raises_appends_nothing_and_propagates(tmp_path: Path) -> None:
    path = new_journal(tmp_path, make_records(3))
    before = path.read_bytes()

    class Refused(Exception):
        pass

    def decide(existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise Refused("run already finished")

    with pytest.raises(Refused, match="already finished"):
        journal.update(path, decide)
    assert path.read_bytes() == before

    # the lock was released: a writer can still append
    writer = open_writer(path)
    writer.append([{"t": "x"}])
    writer.close()


def test_update_cuts_a_torn_tail_before_appending(tmp_path: Path) -> None:
    records = make_records(3)
    path = new_journal(tmp_path, records)
    with path.open("ab") as f:
        f.write(journal.frame({"t": "torn"})[:-2])

    assert journal.update(path, lambda existing: [{"t": "cancel"}]) == [{"t": "cancel"}]
    assert journal.read(path) == journal.ReadResult(
        [*records, {"t": "cancel"}], path.stat().st_size, 0
    )


def test_update_of_a_missing_journal_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        journal.update(tmp_path / "missing.wflj", lambda records: [{"t": "x"}])


# --------------------------------------------------------------------------------------------
# kill -9


KILLED_APPENDER = r"""
import random, sys
from pathlib import Path
from wfl.journal import JournalWriter

writer = JournalWriter(Path(sys.argv[1]))
writer.read_all()
rng = random.Random(int(sys.argv[2]))
i = 0
while True:
    writer.append([{"t": "step", "i": i, "pad": b"x" * rng.randrange(0, 5000)}], sync=True)
    print(i, flush=True)
    i += 1
"""


def test_records_reported_appended_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    rng = random.Random(99)
    for attempt in range(5):
        path = new_journal(tmp_path, [{"t": "start"}], f"run{attempt}.wflj")
        wanted = rng.randint(20, 200)
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_APPENDER, str(path), str(attempt)],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert proc.stdout is not None
        reported: list[int] = []
        try:
            while len(reported) < wanted:
                line = proc.stdout.readline()
                assert line, f"appender exited early with {proc.wait()}"
                reported.append(int(line))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        reported += [int(line) for line in proc.stdout.read().split()]
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL

        records = journal.read(path).records  # must not raise JournalCorrupt
        indices = [r["i"] for r in records[1:]]
        assert records[0] == {"t": "start"}
        assert indices == list(range(len(indices)))
        assert set(reported) <= set(indices)
        assert reported == list(range(len(reported)))

        writer = open_writer(path)
        writer.append([{"t": "resumed"}])
        writer.close()
        assert journal.read(path).records == [*records, {"t": "resumed"}]
