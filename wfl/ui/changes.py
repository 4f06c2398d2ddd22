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

from wfl.store import SUFFIX

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
        feed: AsyncIterator[set[str]] = own(stop=stop)
        return feed
    return directory_changes(Path(store.dir), stop=stop)


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
