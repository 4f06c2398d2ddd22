"""Load-aware leasing (wfl/parking.py): a worker whose step slots have a backlog makes its
lease attempt on a new run later, so a worker with room takes it; alone, it leases it within
PARK_MAX; a run whose attempt waits holds no lease, so a worker SIGKILLed meanwhile loses
none. On both stores. Flows: tests/crash_flows/chaos.py (`held` keeps its step slot while a
gate file exists)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from crash_flows import chaos
from crash_flows.harness import (
    WorkerProc,
    account,
    settled,
    wait_for,
    worker_listening,
)

from wfl import Client, parking
from wfl.worker import Worker

BACKLOG = parking.PARK_BACKLOG


class Loop:
    """An event loop in a thread that runs workers (started and stopped from the test)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runs: list[tuple[Worker, object]] = []

    def start(self, worker: Worker) -> Worker:
        self.runs.append((worker, asyncio.run_coroutine_threadsafe(worker.run(), self.loop)))
        return worker

    def stop(self) -> None:
        for worker, _ in self.runs:
            self.loop.call_soon_threadsafe(worker.stop)
        for _, fut in self.runs:
            fut.result(30)  # type: ignore[attr-defined]
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@contextmanager
def loop() -> Iterator[Loop]:
    running = Loop()
    try:
        yield running
    finally:
        running.stop()


def backlogged(worker: Worker) -> bool:
    """One step running (its slot held at the gate) and BACKLOG runs waiting for a slot."""
    return sum(worker.slot_waiting.values()) == BACKLOG


def start_held(client: Client, log: Path, gate: Path, n: int) -> list[str]:
    return [client.start(chaos.held, {"log": str(log), "gate": str(gate)}) for _ in range(n)]


def test_a_worker_with_a_backlog_leaves_new_runs_to_a_worker_with_room(
    store_spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the busy worker's attempts come after the test (not a race: the idle one must win)
    monkeypatch.setattr(parking, "PARK_STEP", 60.0)
    monkeypatch.setattr(parking, "PARK_MAX", 60.0)
    log, gate = tmp_path / "effects.log", tmp_path / "gate"
    gate.touch()
    client = Client(store=store_spec)
    with loop() as running:
        busy = running.start(Worker(store_spec, max_parallelism=1))
        first = start_held(client, log, gate, 1 + BACKLOG)
        wait_for(lambda: backlogged(busy), 30, "a backlog of runs waiting for the slot")
        idle = running.start(Worker(store_spec, max_parallelism=8))
        wait_for(worker_listening(store_spec, 2), 30, "the second worker to listen")
        late = start_held(client, log, tmp_path / "open", 3)  # (no such gate: they run through)
        wait_for(lambda: all(settled(store_spec, r) for r in late), 30, "the late runs to end")
        assert idle.stats["steps"] == 3  # driven by the worker with room
        now = busy.clock.now()
        for run_id in late:  # the busy one's attempts wait (not leased: no lease held)
            assert run_id not in busy.drivers
            assert busy._waking[run_id].when - now > 30
        gate.unlink()
        everything = first + late
        wait_for(lambda: all(settled(store_spec, r) for r in everything), 30, "every run to end")
        assert busy.stats["steps"] == 1 + BACKLOG
        assert idle.stats["steps"] == 3
    acc = account(store_spec, log, everything)
    assert not acc.problems, "\n".join(acc.problems)
    assert acc.duplicates == 0


def test_a_worker_alone_leases_new_runs_within_park_max_backlog_or_not(
    store_spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parking, "PARK_MAX", 0.2)
    log, gate = tmp_path / "effects.log", tmp_path / "gate"
    gate.touch()
    client = Client(store=store_spec)
    with loop() as running:
        worker = running.start(Worker(store_spec, max_parallelism=1))
        first = start_held(client, log, gate, 1 + BACKLOG)
        wait_for(lambda: backlogged(worker), 30, "a backlog of runs waiting for the slot")
        late = start_held(client, log, gate, 3)
        wait_for(lambda: all(r in worker.drivers for r in late), 30, "the late runs leased")
        assert sum(worker.slot_waiting.values()) == BACKLOG + 3  # the backlog never dropped
        gate.unlink()
        everything = first + late
        wait_for(lambda: all(settled(store_spec, r) for r in everything), 30, "every run to end")
        assert worker.stats["steps"] == len(everything)
        assert not worker._leasing
        assert not worker._starting
        assert not any(worker.slot_waiting.values())
    for run_id in everything:
        assert client.wait(run_id, timeout=1) == "held"


@pytest.mark.slow
def test_a_worker_sigkilled_with_a_backlog_leaves_every_run_to_the_next(
    store_spec: str, tmp_path: Path
) -> None:
    log, gate = tmp_path / "effects.log", tmp_path / "gate"
    gate.touch()
    out = tmp_path / "out"
    out.mkdir()
    client = Client(store=store_spec)
    first = start_held(client, log, gate, 1 + BACKLOG)  # before the worker: it scans them
    victim = WorkerProc(store_spec, "--max-parallelism", "1", out_dir=out)
    try:
        wait_for(worker_listening(store_spec, 1), 30, "the worker to listen")
        wait_for(lambda: log.exists(), 30, "the first step to run")
        late = start_held(client, log, gate, 3)  # news: attempts delayed (the backlog)
        victim.kill()
        gate.unlink()
        heir = WorkerProc(store_spec, out_dir=out)
        everything = first + late
        try:
            wait_for(lambda: all(settled(store_spec, r) for r in everything), 60, "every run")
        finally:
            heir.kill()
    finally:
        victim.kill()
    for run_id in everything:
        assert client.wait(run_id, timeout=1) == "held"
    acc = account(store_spec, log, everything)
    assert not acc.problems, "\n".join(acc.problems)
    assert acc.duplicates == 0
