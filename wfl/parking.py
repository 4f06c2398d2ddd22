"""Load-aware leasing: a worker with a backlog leases a new run a little later, so that a
worker with room takes it first.

A worker leases every new run it hears of (up to max_live), whether or not it has a step slot
for it. With several workers (machines, or `wfl worker --processes N`) that split is set by
who won each lease race when the runs were started, not by who has room: measured on
PostgreSQL (bench/pg.py, 2 worker processes, 200 runs started in a burst) one worker ran out
of runs 3-24 % of the round before the other, and sat idle meanwhile.

So news of a new run is acted on at once only by a worker without a backlog (fewer than
PARK_BACKLOG runs waiting for a step slot, being leased or being replayed, for some workflow
it has run). A worker with a backlog of B makes its lease attempt PARK_STEP * B seconds later
(at most PARK_MAX): of two workers that hear of a run, the one with the shorter backlog tries
first and wins, so the runs go where there is room and the backlogs even out. Nothing else
changes: every worker still makes one attempt per new run (as before, the one that lost looks
again LEASE_RETRY later), a run waiting for its attempt holds no lease (a SIGKILL loses
nothing), and a worker alone loses nothing (its run would wait for a slot anyway). Only news
of a run this worker has not seen is delayed (a start; a sibling's run when its SHARE_DELAY is
up, share.py), never a timer, cancel or event of a run it knows; PARK_MAX bounds the delay of
a run of a workflow new to this worker, which might not have waited for a slot here.

The functions here are Worker methods (bound in worker.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker import Worker

PARK_BACKLOG = 4  # runs waiting for a slot from which a new run's lease attempt is delayed...
PARK_STEP = 0.0005  # ...by this many seconds per run of the backlog...
PARK_MAX = 0.05  # ...and at most this long


def backlog(self: Worker) -> int:
    """Runs waiting for a step slot (counting those being leased or replayed now, which
    will wait too) of the workflow this worker has run with the shortest such queue."""
    if not self._workflow_slots:
        return 0
    arriving = len(self._leasing) + self._starting
    waiting = self.slot_waiting
    return arriving + min(
        max(waiting.get(s, 0) for s in sems) for sems in self._workflow_slots.values()
    )


def _offer(self: Worker, run_id: str) -> None:
    """A new run's lease attempt: now, or later while this worker has a backlog."""
    queue = backlog(self)
    if queue < PARK_BACKLOG or self.draining:
        self._load(run_id)
        return
    self._wake_at(run_id, self.clock.now() + min(PARK_MAX, PARK_STEP * queue))


def _started(self: Worker) -> None:
    """(a turn after a driver started: its replay ran, and it waits for a slot if it must)"""
    self._starting -= 1


def count_waiting(self: Worker, sem: asyncio.Semaphore, delta: int) -> None:
    """A run begins (+1) or ends (-1) waiting for `sem` (slots.take_slot)."""
    self.slot_waiting[sem] = self.slot_waiting.get(sem, 0) + delta
