"""The two statements a store runs most (a start's, a group commit's) sent through libpq
directly (psycopg's PGconn), prepared once per connection.

psycopg's Python layer around a statement (a cursor, the query's conversion, a dumper looked up
per parameter, the result's loading, the generators that wait) cost ~60-100 us of client CPU
per call on this machine, as much as libpq's round trip itself: measured, Client.start on
PostgreSQL 340-390 -> 220-270 us. Here the parameters are given already as PostgreSQL wants
them (text, or binary for `%b`), and the blocking call releases the GIL as psycopg's does.
Errors are psycopg's own exceptions (made from the server's error), so the store's handling
of a failed or broken connection (PostgresStore.session) is the same as for any statement.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import psycopg
    from psycopg.pq.abc import PGresult

_PLACEHOLDER = re.compile(r"%([sb])")


class Statement:
    """`sql` with %s (a parameter in text format) and %b (binary) placeholders, run by name."""

    def __init__(self, name: str, sql: str) -> None:
        self.name = name.encode()
        self.formats = [int(m.group(1) == "b") for m in _PLACEHOLDER.finditer(sql)]
        count = iter(range(1, len(self.formats) + 1))
        self.sql = _PLACEHOLDER.sub(lambda _: f"${next(count)}", sql).encode()
        self._prepared_on: weakref.WeakSet[Any] = weakref.WeakSet()

    def run(self, conn: psycopg.Connection[Any], params: Sequence[bytes | None]) -> PGresult:
        """Run on `conn` (the caller holds it: one user at a time), preparing it first if
        this connection has not; the result, or psycopg's exception for the server's error."""
        pgconn = conn.pgconn
        if conn not in self._prepared_on:
            _checked(conn, pgconn.prepare(self.name, self.sql))
            self._prepared_on.add(conn)
        # (None is NULL: both of psycopg's libpq wrappers take it, though its abc says not)
        values = cast("Sequence[bytes]", params)
        return _checked(conn, pgconn.exec_prepared(self.name, values, self.formats))


def _checked(conn: psycopg.Connection[Any], result: PGresult) -> PGresult:
    from psycopg import errors
    from psycopg.pq import ExecStatus

    if result.status in (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK):
        return result
    raise errors.error_from_result(result, encoding=conn.info.encoding)


def text(value: str | float | None) -> bytes | None:
    """A parameter in PostgreSQL's text format (floats exactly: repr round-trips; None is
    NULL)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return repr(value).encode()


def column(result: PGresult) -> list[str]:
    """The first column of a result's rows (text format) as str."""
    return [bytes(result.get_value(i, 0) or b"").decode() for i in range(result.ntuples)]
