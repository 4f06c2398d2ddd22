"""Where the web view learns that runs changed: the store's own change signals.

One feed per server (the hub fans it out to every viewer). A feed yields sets of run ids
whose records changed: created, appended to, or deleted; and an empty set once it is
listening (and from time to time after), so the hub lists the runs only when no change can
slip between the listing and the first signal. A batch holding SCHEDULES says
that some schedule changed. A store that publishes its own
signals (PostgreSQL's LISTEN/NOTIFY) offers them as `store.changes(stop=...)`; a journal
directory is watched with the kernel's file notifications (inotify, via watchfiles), so no
journal is polled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from wfl.store import SCHEDULES_NEWS, SUFFIX

# Changes are grouped: yielded once none came for STEP ms, or after DEBOUNCE ms at most
# (a busy worker appends without pause). This bounds both latency and the rate of pushes.
STEP_MS = 30
DEBOUNCE_MS = 150
IDLE_MS = 500  # an empty batch this often when nothing changes (it costs one loop turn)
SCHEDULES = ":schedules"  # in a batch: some schedule changed (never a run id: no ':' in ids)
SCHEDULE_SUFFIX = ".schedule"


def change_feed(store: Any, *, stop: asyncio.Event) -> AsyncIterator[set[str]]:
    """Sets of changed run ids, until `stop` is set."""
    own = getattr(store, "changes", None)
    if callable(own):
        return _own_feed(own(stop=stop))
    from wfl.store import FileStore

    if isinstance(store, FileStore):
        return directory_changes(store.dir, stop=stop)
    return store_news(store, stop=stop)


async def _own_feed(feed: AsyncIterator[set[str]]) -> AsyncIterator[set[str]]:
    """A store's own feed: it starts listening when first asked, and its schedules news
    becomes SCHEDULES. (The hub's periodic re-listing covers a change made between its
    first listing and the feed's start.)"""
    yield set()
    async for ids in feed:
        yield (ids - {SCHEDULES_NEWS}) | {SCHEDULES} if SCHEDULES_NEWS in ids else ids


def pushes_appends(store: Any) -> bool:
    """Whether the feed tells of every record appended (a journal directory's does); a
    store's news only tells of starts, cancels and events, so progress needs a re-listing."""
    from wfl.store import FileStore

    return isinstance(store, FileStore) or callable(getattr(store, "changes", None))


async def store_news(store: Any, *, stop: asyncio.Event) -> AsyncIterator[set[str]]:
    """The store's own news channel (PostgreSQL: LISTEN/NOTIFY), listened to without
    counting as a worker: woken by the socket, never polled."""
    found = store.listen(worker=False)
    if found is None:
        raise RuntimeError("this store pushes no news")
    _, listener = found
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(listener.fileno(), readable.set)
    try:
        yield set()  # listening
        while not stop.is_set():
            try:
                await asyncio.wait_for(readable.wait(), IDLE_MS / 1000)
            except TimeoutError:
                continue
            readable.clear()
            news = set(await asyncio.to_thread(listener.drain))
            if SCHEDULES_NEWS in news:
                news = (news - {SCHEDULES_NEWS}) | {SCHEDULES}
            yield news
    finally:
        loop.remove_reader(listener.fileno())
        listener.close()


def _is_watched(change: Any, path: str) -> bool:
    return path.endswith((SUFFIX, SCHEDULE_SUFFIX))


async def directory_changes(directory: Path, *, stop: asyncio.Event) -> AsyncIterator[set[str]]:
    """Journals in `directory` and schedules in its `schedules/`, by inotify (no polling)."""
    from watchfiles import awatch

    paths = [directory] + [d for d in (directory / "schedules",) if d.is_dir()]
    async for batch in awatch(
        *paths,
        watch_filter=_is_watched,
        step=STEP_MS,
        debounce=DEBOUNCE_MS,
        recursive=False,
        stop_event=stop,
        rust_timeout=IDLE_MS,
        yield_on_timeout=True,
    ):
        ids = set()
        for _, path in batch:
            name = Path(path).name
            ids.add(SCHEDULES if name.endswith(SCHEDULE_SUFFIX) else name[: -len(SUFFIX)])
        yield ids
