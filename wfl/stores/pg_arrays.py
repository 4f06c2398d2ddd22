"""One-dimensional PostgreSQL arrays in binary, packed here instead of by psycopg.

A group commit passes its rows as 13 arrays (pg_write.BATCH). psycopg's array dumper is Python
code that inspects every element (type, dimensions, nulls) on each call: measured, over half
of the client CPU of a group commit (0.3 ms per statement on this machine; with 2 worker
processes on 2 cores every such millisecond is taken from the other process and the server).
Our arrays have one known element type each and one dimension, so each is one struct.pack (or
one join) here, and psycopg sends the bytes as they are (register() on each connection).

The format is PostgreSQL's array_send: ndim, has-nulls flag, element type; per dimension its
length and lower bound (1); then each element as its length (-1: NULL) and its binary value.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import psycopg

_HEAD = struct.Struct(">iiiii")  # ndim, has nulls, element oid, length, lower bound
_EMPTY = struct.Struct(">iii")  # ndim 0, no nulls, element oid


class PackedArray(bytes):
    """An array already in PostgreSQL's binary format; `oid` is the array type's."""

    oid: ClassVar[int] = 0


class TextArray(PackedArray):
    oid = 1009


class Int4Array(PackedArray):
    oid = 1007


class Int8Array(PackedArray):
    oid = 1016


class Float8Array(PackedArray):
    oid = 1022


class ByteaArray(PackedArray):
    oid = 1001


def _head(element: int, n: int, nulls: bool = False) -> bytes:
    return _HEAD.pack(1, int(nulls), element, n, 1) if n else _EMPTY.pack(0, 0, element)


def _fixed(code: str, size: int, element: int, values: Sequence[Any]) -> bytes:
    n = len(values)
    flat: list[Any] = [size] * (2 * n)
    flat[1::2] = values
    return _head(element, n) + struct.pack(">" + ("i" + code) * n, *flat)


def int4_array(values: Sequence[int]) -> Int4Array:
    return Int4Array(_fixed("i", 4, 23, values))


def int8_array(values: Sequence[int]) -> Int8Array:
    return Int8Array(_fixed("q", 8, 20, values))


def float8_array(values: Sequence[float | None]) -> Float8Array:
    if None not in values:
        return Float8Array(_fixed("d", 8, 701, [float(v) for v in values]))  # type: ignore[arg-type]
    parts = [_head(701, len(values), nulls=True)]
    for v in values:
        parts.append(b"\xff\xff\xff\xff" if v is None else struct.pack(">id", 8, v))
    return Float8Array(b"".join(parts))


def _varlena(element: int, values: Sequence[bytes]) -> bytes:
    size = struct.Struct(">i").pack
    parts = [_head(element, len(values))]
    for v in values:
        parts.append(size(len(v)))
        parts.append(v)
    return b"".join(parts)


def text_array(values: Sequence[str]) -> TextArray:
    return TextArray(_varlena(25, [v.encode() for v in values]))


def bytea_array(values: Sequence[bytes]) -> ByteaArray:
    return ByteaArray(_varlena(17, [bytes(v) for v in values]))


def register(conn: psycopg.Connection[Any]) -> None:
    """Let `conn` send PackedArrays as they are (binary, with their array type's oid)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    for cls in (TextArray, Int4Array, Int8Array, Float8Array, ByteaArray):

        class _Dumper(Dumper):
            format = Format.BINARY
            oid = cls.oid

            def dump(self, obj: Any) -> bytes:
                return obj  # type: ignore[no-any-return]

        conn.adapters.register_dumper(cls, _Dumper)
