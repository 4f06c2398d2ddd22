"""One server-side watcher of the store, fanned out to every viewer.

The hub keeps every run's row in memory (RunRows), applies the store's change signals to it,
and pushes to each subscriber a fresh snapshot of what that subscriber looks at (a page of the
runs table, one run, the schedules) whenever it differs from what it was last sent. A snapshot
is computed once per distinct view per batch of changes, however many browsers show it; a slow
browser only ever has the latest snapshot waiting, never a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from wfl.client import Client
from wfl.errors import InvalidRunId, RunNotFound

from . import model
from .changes import SCHEDULES, change_feed, pushes_appends

log = logging.getLogger(__name__)

RESYNC_EVERY = 30.0  # seconds: a full re-listing heals a missed signal (e.g. inotify overflow)
FALLBACK_RESYNC = 2.0  # without change signals, the only way to see changes
BIG_BATCH = 300  # more changed runs than this in one batch: re-list them all (uses the index)

Feed = Callable[[Any, asyncio.Event], AsyncIterator[set[str]]]


@dataclass(frozen=True)
class View:
    """What one subscriber looks at; equal views share one snapshot."""

    kind: str  # "runs" | "run" | "schedules"
    run_id: str = ""
    state: str = ""
    workflow: str = ""
    prefix: str = ""
    page: int = 1
    per_page: int = model.PER_PAGE


class Subscriber:
    def __init__(self, view: View) -> None:
        self.view = view
        self.last: str | None = None
        self._pending: str | None = None
        self._ready = asyncio.Event()
        self.closed = False  # the server is shutting down: the stream should end

    def offer(self, snapshot: str) -> None:
        """Queue `snapshot` unless it is what this subscriber already has (or will get)."""
        if snapshot == (self._pending if self._pending is not None else self.last):
            return
        self._pending = snapshot  # replaces an unsent older one: only the latest matters
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self, timeout: float) -> str | None:
        """The next snapshot, or None after `timeout` seconds without one (a keep-alive)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        self._ready.clear()
        snapshot, self._pending = self._pending, None
        if snapshot is not None:
            self.last = snapshot
        return snapshot


def _default_feed(store: Any, stop: asyncio.Event) -> AsyncIterator[set[str]]:
    return change_feed(store, stop=stop)


class Hub:
    def __init__(
        self, client: Client, *, feed: Feed = _default_feed, resync_every: float = RESYNC_EVERY
    ) -> None:
        self.client = client
        self.rows = model.RunRows()
        self.subscribers: set[Subscriber] = set()
        self._feed = feed
        self._resync_every = resync_every
        if feed is _default_feed and not pushes_appends(client.store):
            # its news tells of starts and cancels, not of steps: re-list to show progress
            self._resync_every = min(resync_every, FALLBACK_RESYNC)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()  # one batch applied at a time
        self._listening = asyncio.Event()  # the feed has yielded once: it is watching
        self.batches = 0  # how many change batches were applied (for tests and logs)
        self._schedule_runs: set[str] = set()  # the last runs the schedules view shows

    # -- life ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen first, then list: a run that changes in between is in the listing or in a
        signal after it, never in neither."""
        self._tasks = [asyncio.create_task(self._watch(), name="wfl-ui-watch")]
        await self._listening.wait()
        async with self._lock:
            self.rows.replace(await asyncio.to_thread(_load_rows, self.client))
        self._tasks.append(asyncio.create_task(self._resync(), name="wfl-ui-resync"))

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                async for ids in self._feed(self.client.store, self._stop):
                    self._listening.set()
                    if ids:
                        await self.apply(ids)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._listening.is_set():  # e.g. out of inotify watches
                    log.warning("no change signals from the store (%s): re-listing every "
                                "%.0f s instead", exc, FALLBACK_RESYNC)  # fmt: skip
                    self._resync_every = FALLBACK_RESYNC
                    self._listening.set()
                    return
                log.exception("the store's change feed failed; restarting it in 1 s")
                await asyncio.sleep(1.0)

    async def _resync(self) -> None:
        took = 0.0
        while True:
            # a listing of 10,000 runs takes ~1 s: keep its share of a core small
            await asyncio.sleep(max(self._resync_every, 20 * took))
            began = time.monotonic()
            await self.apply(None)
            took = time.monotonic() - began

    # -- changes ---------------------------------------------------------------------------

    async def apply(self, run_ids: set[str] | None) -> None:
        """Bring the rows up to date for `run_ids` (None: every run) and push what changed."""
        async with self._lock:
            schedules_changed = run_ids is None or SCHEDULES in (run_ids or ())
            if run_ids is not None:
                run_ids = run_ids - {SCHEDULES}
            if run_ids is None or len(run_ids) > BIG_BATCH:
                rows = await asyncio.to_thread(_load_rows, self.client)
                changed = self.rows.replace(rows)
                run_views_changed: set[str] | None = None  # every open run page
            else:
                found = await asyncio.to_thread(_read_rows, self.client, run_ids)
                changed = self.rows.apply(found)
                run_views_changed = run_ids  # a run page shows more than its row
            # the schedules view shows each schedule's last run and its state
            schedules_changed = schedules_changed or bool(changed & self._schedule_runs)
            self.batches += 1
            await self._publish(changed, run_views_changed, schedules_changed)

    async def _publish(
        self, changed: set[str], runs_changed: set[str] | None, schedules_changed: bool
    ) -> None:
        snapshots: dict[View, str] = {}
        for sub in list(self.subscribers):
            view = sub.view
            if view.kind == "runs" and not changed:
                continue
            if view.kind == "run" and runs_changed is not None and view.run_id not in runs_changed:
                continue
            if view.kind == "schedules" and not schedules_changed:
                continue
            if view not in snapshots:
                snapshots[view] = await self.snapshot(view)
            sub.offer(snapshots[view])

    # -- views -----------------------------------------------------------------------------

    async def subscribe(self, view: View) -> Subscriber:
        sub = Subscriber(view)
        sub.offer(await self.snapshot(view))
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def close_streams(self) -> None:
        """End every open stream (at shutdown: browsers reconnect to the next server)."""
        for sub in list(self.subscribers):
            sub.close()

    async def snapshot(self, view: View) -> str:
        if view.kind == "run":
            data = await asyncio.to_thread(_run_or_missing, self.client, view.run_id)
        elif view.kind == "schedules":
            from .schedules import list_schedules

            data = await asyncio.to_thread(list_schedules, self.client)
            self._schedule_runs = {s["last_run"] for s in data["schedules"] if s.get("last_run")}
        else:
            data = self.runs_page(view)
        return dumps(data)

    def runs_page(self, view: View) -> dict[str, Any]:
        return self.rows.page(
            state=view.state or None,
            workflow=view.workflow or None,
            prefix=view.prefix or None,
            page=view.page,
            per_page=view.per_page,
        )


def dumps(data: Any) -> str:
    """JSON of a snapshot; what JSON cannot hold (bytes, bytes-keyed dicts) as its repr."""
    try:
        return json.dumps(data, default=repr, separators=(",", ":"))
    except TypeError:  # a dict key JSON cannot hold: jsonout shows it as its repr
        from wfl import jsonout

        return jsonout.dumps(data)


def _load_rows(client: Client) -> dict[str, model.Row]:
    return {st.id: model.row(st) for st in client.list()}


def _read_rows(client: Client, run_ids: set[str]) -> dict[str, model.Row | None]:
    return model.read_rows(client, run_ids)


def _run_or_missing(client: Client, run_id: str) -> dict[str, Any]:
    try:
        return model.run_detail(client, run_id)
    except (RunNotFound, InvalidRunId, FileNotFoundError):
        return {"id": run_id, "missing": True}
