"""Step slots: how many steps execute at once (a workflow's max_parallelism, its manager's,
the worker's), and a run keeping its slot from one step to its next.

The functions here are Worker methods (bound in worker.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .manager import WorkflowDef
    from .replay import RunDriver
    from .worker import Worker

SLOT_HOLD_TURNS = 8  # a run keeps its step's slot this long for its next step (give_slot)
SLOT_CHAIN = 32  # steps of one run in a row on one slot, at most


async def take_slot(self: Worker, driver: RunDriver) -> None:
    """A slot to execute one step: within the workflow's own max_parallelism, its
    manager's (shared by all of the manager's workflows) and the worker's. The run's
    previous step may have left its slot to it (give_slot): then that one."""
    if driver.held_slot is not None:
        driver.held_slot = None  # (its release timer finds it taken)
        driver.slot_chain += 1
        return
    taken: list[asyncio.Semaphore] = []
    try:
        for sem in self._slot_semaphores(driver.workflow):
            if sem.locked():  # counted while it waits: the worker's backlog (parking.py)
                self.count_waiting(sem, 1)
                try:
                    await sem.acquire()
                finally:
                    self.count_waiting(sem, -1)
            else:
                await sem.acquire()
            taken.append(sem)
    except BaseException:
        for sem in taken:
            sem.release()
        raise
    driver.slot_chain = 0


def give_slot(self: Worker, driver: RunDriver, *, keep: bool) -> None:
    """After a step (keep: it ran) the run keeps its slot for SLOT_HOLD_TURNS turns of the
    loop: its next step, called at once by the workflow woken by this one's result, takes
    it over, so that its attempt record goes with this step's result in one write and one
    fsync instead of waiting for a slot alone. SLOT_CHAIN steps in a row at most, then the
    slot goes to whoever waits longest (fair as before)."""
    if keep and driver.slot_chain < SLOT_CHAIN and not self.draining and self._loop:
        token = driver.held_slot = object()
        # one callback a turn counts down every held slot (not one per slot: ~3 per step)
        self._holding.append([driver, token, SLOT_HOLD_TURNS])
        if not self._slot_ticking:
            self._slot_ticking = True
            self._loop.call_soon(self._slot_tick)
        return
    for sem in self._slot_semaphores(driver.workflow):
        sem.release()


def _slot_tick(self: Worker) -> None:
    """A turn of the loop has passed for every held slot: release those held long enough."""
    holding, self._holding = self._holding, []
    for entry in holding:
        driver, token, turns = entry
        if driver.held_slot is not token:
            continue  # taken over by the run's next step
        if turns and not driver.closing and not self.draining:
            entry[2] = turns - 1
            self._holding.append(entry)
            continue
        driver.held_slot = None
        for sem in self._slot_semaphores(driver.workflow):
            sem.release()
        self.committer.ready(driver)  # its records, held back for the next step, may go now
    if self._holding:
        assert self._loop is not None
        self._loop.call_soon(self._slot_tick)
    else:
        self._slot_ticking = False


def _slot_semaphores(self: Worker, wf: WorkflowDef) -> list[asyncio.Semaphore]:
    sems = self._workflow_slots.get(wf)
    if sems is None:
        sems = []
        for owner, size in ((wf, wf.max_parallelism), (wf.manager, wf.manager.max_parallelism)):
            sem = self._owner_slots.get(owner)
            if sem is None:
                sem = self._owner_slots[owner] = asyncio.Semaphore(size)
            sems.append(sem)
        assert self._global_slots is not None
        sems.append(self._global_slots)
        self._workflow_slots[wf] = sems
    return sems
