"""News from the PostgreSQL store: a LISTEN connection whose socket the worker's event loop
watches (PgListener), and the change feed for watchers such as the web view."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

    from wfl.stores.postgres import PostgresStore

WATCH_EVERY = 0.25  # seconds between a watcher's looks for changed runs


class PgListener:
    """A connection that LISTENs; its socket turns readable when a NOTIFY (or EOF) comes."""

    def __init__(self, store: PostgresStore, conn: psycopg.Connection[Any]) -> None:
        self.store = store
        self.conn = conn

    def fileno(self) -> int:
        return int(self.conn.pgconn.socket)

    def drain(self) -> list[str]:
        import psycopg

        pgconn = self.conn.pgconn
        try:
            pgconn.consume_input()
        except psycopg.Error as exc:
            raise self.store.unavailable(exc) from None
        if pgconn.status != 0:  # CONNECTION_OK
            raise self.store.unavailable(RuntimeError("the connection was closed"))
        news = []
        while (n := pgconn.notifies()) is not None:
            news.append(n.extra.decode(errors="replace"))
        return news

    def close(self) -> None:
        with suppress(Exception):
            self.conn.close()


async def watch_changes(store: PostgresStore, stop: asyncio.Event) -> AsyncIterator[set[str]]:
    """See PostgresStore.changes."""
    loop = asyncio.get_running_loop()
    opened = await loop.run_in_executor(None, lambda: store.listen(worker=False))
    assert opened is not None
    listener = opened[1]
    _, mark = await loop.run_in_executor(None, store.changed_since, 0)
    ready = asyncio.Event()
    loop.add_reader(listener.fileno(), ready.set)
    try:
        while not stop.is_set():
            waits = [asyncio.ensure_future(e.wait()) for e in (ready, stop)]
            await asyncio.wait(waits, timeout=WATCH_EVERY, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            ready.clear()
            news = set(listener.drain())
            written, mark = await loop.run_in_executor(None, store.changed_since, mark)
            if news | written:
                yield news | written
    finally:
        loop.remove_reader(listener.fileno())
        listener.close()
