"""Crash safety with real processes: workers are SIGKILLed at random moments and restarted,
SIGTERMed mid-step; afterwards the side-effect logs must match the journals (SPEC §1, §5).

The flows live in tests/crash_flows/chaos.py; the accounting in tests/crash_flows/harness.py.
Every multi-process test is bounded: waits poll with deadlines. The only sleeps are the
seeded random kill moments and the idle window whose CPU use the pick-up test measures.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from crash_flows import chaos
from crash_flows.harness import (
    CHAOS,
    WorkerProc,
    account,
    journals,
    line_count,
    log_lines,
    oc_calls,
    settled,
    state_of,
    wait_for,
    worker_listening,
)

from wfl import Client, journal

ON_COMPLETE = f"{CHAOS}:finished"


class OcWindow:
    """Called after each kill: counts, per run, on_complete calls the dead worker made whose
    `oc` record it did not write. Each such call is cut off and will be made again."""

    def __init__(self, directory: Path, oc_log: Path, run_ids: list[str]) -> None:
        self.directory, self.oc_log, self.run_ids = directory, oc_log, run_ids
        self.cut = dict.fromkeys(run_ids, 0)
        self.seen = dict.fromkeys(run_ids, 0)

    def __call__(self) -> None:
        calls = oc_calls(self.oc_log)
        for r in self.run_ids:
            new = calls[r] - self.seen[r]
            self.seen[r] = calls[r]
            if new and not state_of(self.directory, r).on_complete_ran:
                self.cut[r] += new


def _chaos(
    directory: Path,
    watched: Path,
    run_ids: list[str],
    rng: random.Random,
    *,
    lines: tuple[int, int],
    kills: int,
    jitter: float = 0.02,
    after_kill: Callable[[], None] | None = None,
) -> int:
    """Start a worker; SIGKILL it once `watched` grew by a random number of lines (plus a
    random few ms), or now and then at a random moment after its start; restart it; `kills`
    times at most, then let the last worker finish every run. Returns the kills made.
    `after_kill` looks at what each dead worker left behind."""
    made = 0
    while True:
        worker = WorkerProc(directory)
        target = line_count(watched) + rng.randint(*lines)
        blind = rng.random() < 0.2  # kill at a random moment: in startup, replay, anywhere
        deadline = time.monotonic() + rng.uniform(0.1, 0.5)
        last_check = 0.0

        def ready(
            target: int = target, deadline: float = deadline, blind: bool = blind, made: int = made
        ) -> bool:
            nonlocal last_check
            if made < kills and (
                time.monotonic() > deadline if blind else line_count(watched) >= target
            ):
                return True
            now = time.monotonic()
            if now - last_check > 0.05:
                last_check = now
                return all(settled(directory, r) for r in run_ids)
            return False

        try:
            wait_for(ready, 30.0, f"progress after {made} kills (log {watched.name})")
        except AssertionError:
            worker.kill()
            raise AssertionError(f"no progress; worker said:\n{worker.output()}") from None
        if all(settled(directory, r) for r in run_ids):
            worker.kill()
            return made
        if not blind:
            time.sleep(rng.uniform(0, jitter))  # a random moment shortly after a side effect
        worker.kill()
        made += 1
        if after_kill is not None:
            after_kill()


@pytest.mark.slow
def test_fault_injection_sigkill_at_random_moments(tmp_path: Path) -> None:
    """Two runs of ~30 actions each (sequential, a fan-out, retried, refused, a query, a
    mutation, a durable sleep); the worker is SIGKILLed 16 times at random moments and
    restarted. Every execution must be a recorded attempt, nothing may run after its `done`,
    the results must be right and on_complete must run once (see the on_complete test)."""
    directory = tmp_path / "runs"
    log, oc_log = tmp_path / "effects.log", tmp_path / "on_complete.log"
    client = Client(directory)
    run_ids = [
        client.start(
            f"{CHAOS}:fault",
            {"log": str(log)},
            on_complete=ON_COMPLETE,
            context={"oc_log": str(oc_log), "linger": 0.05},
        )
        for _ in range(2)
    ]
    rng = random.Random(20261124)
    oc_window = OcWindow(directory, oc_log, run_ids)
    kills = _chaos(directory, log, run_ids, rng, lines=(1, 4), kills=16, after_kill=oc_window)

    records = journals(directory)  # every journal reads without JournalCorrupt
    for run_id in run_ids:
        status = client.status(run_id)
        assert status.state == "completed", status.error
        assert status.result == chaos.fault_expected()
        assert oc_calls(oc_log)[run_id] == 1 + oc_window.cut[run_id]
        assert sum(r["t"] == "end" for r in records[run_id]) == 1
        assert sum(r["t"] == "oc" for r in records[run_id]) == 1
    acc = account(directory, log)
    assert not acc.problems, "\n".join(acc.problems)
    assert acc.duplicates == 0
    assert acc.steps == 2 * (1 + 6 + chaos.FAN + 1 + 3 + 1 + 5 + 4)  # every executed step
    assert kills >= 12, f"only {kills} kills: the chaos was too mild to prove anything"
    reruns = sum(oc_window.cut.values())
    print(
        f"\nfault injection: {kills} kills survived; {acc.summary()}; on_complete re-run "
        f"{reruns} times after a kill between it and its record"
    )


@pytest.mark.slow
def test_sigkill_while_appending_leaves_every_journal_readable(tmp_path: Path) -> None:
    """Kill the worker while it appends big batches (many parallel steps with large
    results); every journal must read cleanly, torn tails ignored, and a new worker must
    finish every run."""
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    client = Client(directory)
    args = {"log": str(log), "width": 30, "size": 100_000}  # 3 MB of results per run
    run_ids = [client.start(f"{CHAOS}:burst", args) for _ in range(3)]
    rng = random.Random(7)
    torn_seen = 0
    for _ in range(5):
        worker = WorkerProc(directory)
        sizes = {r: (directory / f"{r}.journal").stat().st_size for r in run_ids}

        def grew(sizes: dict[str, int] = sizes) -> bool:
            return any((directory / f"{r}.journal").stat().st_size > s for r, s in sizes.items())

        wait_for(grew, 20.0, "the worker to append")
        time.sleep(rng.uniform(0, 0.03))
        worker.kill()
        for run_id in run_ids:
            result = journal.read(directory / f"{run_id}.journal")  # no JournalCorrupt
            torn_seen += result.torn > 0
    # A worker's appends take microseconds, so the kills above rarely land inside one. Make
    # sure they do: a process appending one huge batch to each journal, killed mid-write.
    unfinished = [r for r in run_ids if not settled(directory, r)]
    for run_id in run_ids:
        path = directory / f"{run_id}.journal"
        before = path.stat().st_size
        writer = subprocess.Popen([sys.executable, "-c", _BIG_APPEND, str(path)])

        def begun(path: Path = path, before: int = before, writer: Any = writer) -> bool:
            return path.stat().st_size > before or writer.poll() is not None

        wait_for(begun, 30.0, "the big append to begin", every=0.0002)
        writer.kill()
        writer.wait()
        result = journal.read(path)  # no JournalCorrupt
        assert result.torn > 0, "the big append was not cut short"
        assert result.end <= before
        torn_seen += 1
    worker = WorkerProc(directory)
    try:
        wait_for(lambda: all(settled(directory, r) for r in run_ids), 30.0, "the runs to end")
    finally:
        worker.kill()
    for run_id in run_ids:
        assert client.status(run_id).state == "completed"
        assert client.wait(run_id, timeout=1) == 30 * (100_000 + 3) - 10  # "i:" + x * size
        if run_id in unfinished:  # its worker cut the torn tail off before appending
            assert journal.read(directory / f"{run_id}.journal").torn == 0
    acc = account(directory, log)
    assert not acc.problems, "\n".join(acc.problems)
    print(
        f"\ntorn writes: 5 worker kills mid-append + 3 killed big appends, {torn_seen} torn "
        f"tails seen and ignored; {acc.summary()}"
    )


_BIG_APPEND = """
import sys
from pathlib import Path
from wfl import journal
writer = journal.JournalWriter(Path(sys.argv[1]))
writer.read_all()
writer.append_frames(journal.frame({"t": "blob", "data": b"x" * 30_000_000}))
"""


@pytest.mark.slow
def test_sigterm_lets_the_running_step_finish_and_exits_0(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    client = Client(directory)
    run_id = client.start(f"{CHAOS}:lingering", {"log": str(log), "seconds": 0.5})
    worker = WorkerProc(directory)
    wait_for(lambda: line_count(log) >= 1, 10.0, "the slow step to begin")
    began = time.monotonic()
    worker.terminate()
    code = worker.wait(timeout=10.0)
    assert code == 0, worker.output()
    assert time.monotonic() - began < 5.0
    # the slow step finished and is recorded done; the next one did not start
    assert [line.split()[-1] for line in log_lines(log)] == ["begin", "end"]
    st = state_of(directory, run_id)
    assert st.steps[0].outcome == "done"
    assert st.steps[0].attempts == 1
    assert all(s.attempts == 0 for n, s in st.steps.items() if n > 0)
    # a later worker finishes the run without running the slow step again
    worker = WorkerProc(directory)
    try:
        wait_for(lambda: settled(directory, run_id), 10.0, "the run to end")
    finally:
        worker.kill()
    assert client.wait(run_id, timeout=1) == "slow done"
    assert [line.split()[-1] for line in log_lines(log)] == ["begin", "end", "note=after"]


@pytest.mark.slow
def test_sigterm_past_the_grace_period_records_the_cut_off_attempt(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    client = Client(directory)
    run_id = client.start(f"{CHAOS}:lingering", {"log": str(log), "seconds": 30.0})
    worker = WorkerProc(directory, "--grace", "0.2")
    wait_for(lambda: line_count(log) >= 1, 10.0, "the slow step to begin")
    began = time.monotonic()
    worker.terminate()
    code = worker.wait(timeout=10.0)
    assert code == 0, worker.output()
    assert time.monotonic() - began < 5.0  # not the 30 s the step would take
    st = state_of(directory, run_id)
    assert st.steps[0].attempts == 1
    assert not st.steps[0].running  # the cut-off attempt is recorded as ended...
    assert st.steps[0].error_type == "Interrupted"  # ...as interrupted
    assert "grace period" in (st.steps[0].message or "")


@pytest.mark.slow
def test_sigterm_never_costs_an_attempt_of_a_non_retried_action(tmp_path: Path) -> None:
    """SIGTERM at random moments while many non-retried actions start: an attempt the
    worker recorded must also be executed (an attempt recorded but skipped would count as
    interrupted, and a non-retried action would fail its run)."""
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    client = Client(directory)
    run_ids = [client.start(f"{CHAOS}:wide", {"log": str(log), "width": 30}) for _ in range(4)]
    rng = random.Random(5)
    for _ in range(4):
        worker = WorkerProc(directory)
        target = line_count(log) + rng.randint(1, 20)
        wait_for(
            lambda target=target: (
                line_count(log) >= target or all(settled(directory, r) for r in run_ids)
            ),
            20.0,
            "progress",
        )
        wait_for(worker_listening(directory), 10.0, "the worker to listen")
        worker.terminate()
        assert worker.wait(timeout=10.0) == 0, worker.output()
        if all(settled(directory, r) for r in run_ids):
            break
    worker = WorkerProc(directory)
    try:
        wait_for(lambda: all(settled(directory, r) for r in run_ids), 20.0, "the runs to end")
    finally:
        worker.kill()
    for run_id in run_ids:
        st = client.status(run_id)
        assert st.state == "completed", (st.error, worker.output())
    acc = account(directory, log)
    assert not acc.problems, "\n".join(acc.problems)
    assert acc.interrupted == 0


@pytest.mark.slow
def test_on_complete_runs_once_unless_killed_before_its_record(tmp_path: Path) -> None:
    """on_complete is recorded (`oc`) after it returns, and re-run after a crash only when
    that record is missing: at-least-once, exactly once unless a worker dies between
    on_complete starting and its `oc` record landing. Kill workers around run ends and
    check exactly that, per run."""
    directory = tmp_path / "runs"
    log, oc_log = tmp_path / "effects.log", tmp_path / "on_complete.log"
    client = Client(directory)
    run_ids = [
        client.start(
            f"{CHAOS}:tiny",
            {"log": str(log)},
            on_complete=ON_COMPLETE,
            context={"oc_log": str(oc_log), "linger": 0.03},
        )
        for _ in range(12)
    ]
    rng = random.Random(99)
    oc_window = OcWindow(directory, oc_log, run_ids)
    kills = _chaos(
        directory,
        oc_log,
        run_ids,
        rng,
        lines=(1, 2),
        kills=10,
        jitter=0.04,
        after_kill=oc_window,
    )
    calls = oc_calls(oc_log)
    for r in run_ids:
        assert calls[r] == 1 + oc_window.cut[r], (r, calls[r], oc_window.cut[r])
        records = journals(directory)[r]
        assert [x["t"] for x in records].count("oc") == 1
        assert client.wait(r, timeout=1) == 2 + 4
    acc = account(directory, log)
    assert not acc.problems, "\n".join(acc.problems)
    reruns = sum(oc_window.cut.values())
    print(
        f"\non_complete: {kills} kills, {len(run_ids)} runs, {reruns} re-runs after a kill "
        "inside the on_complete window"
    )


@pytest.mark.slow
def test_new_run_is_picked_up_promptly_by_an_idle_worker(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    directory.mkdir()
    worker = WorkerProc(directory)
    try:
        wait_for(worker_listening(directory), 10.0, "the worker to listen")
        before = _cpu_ticks(worker.pid)
        time.sleep(0.5)  # an idle worker blocks: it must burn (almost) no CPU meanwhile
        idle_ticks = _cpu_ticks(worker.pid) - before
        started = time.monotonic()
        Client(directory).start(f"{CHAOS}:tiny", {"log": str(log)})
        wait_for(lambda: line_count(log) >= 1, 2.0, "the first step to start", every=0.001)
        latency = time.monotonic() - started
    finally:
        worker.kill()
    assert idle_ticks <= 5, f"an idle worker used {idle_ticks} CPU ticks in 0.5 s: polling?"
    print(f"\npick-up: first step ran {latency * 1000:.0f} ms after start")


def _cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        pytest.skip("no /proc: cannot measure a worker's CPU use")
    return int(fields[11]) + int(fields[12])


def test_a_journal_being_created_is_left_alone(tmp_path: Path) -> None:
    """`wfl start` creates a journal with O_EXCL and then writes its first record: a worker
    rescanning the directory in between sees an empty file. It must leave it alone (its
    creator notifies the workers when it is ready), not "repair" it and fail the run for
    want of a flow."""
    from wfl.worker import Worker

    directory = tmp_path / "runs"
    directory.mkdir()
    being_created = directory / "0123456789ab.journal"
    being_created.touch(mode=0o600)
    worker = Worker(directory, listen=False)
    worker.rescan()
    asyncio.run(worker.run(once=True))
    assert being_created.read_bytes() == b""


def test_shutdown_waits_for_a_flush_in_flight(tmp_path: Path, monkeypatch: Any) -> None:
    """SIGTERM while a batch with a step's `done` is being written (the write runs on an I/O
    thread): the worker must not close the journal under it, or the step that finished is
    lost and the next worker counts it as interrupted (a non-retried action fails)."""
    from wfl.worker import Worker

    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    run_id = Client(directory).start(f"{CHAOS}:lingering", {"log": str(log), "seconds": 0})
    worker = Worker(directory, listen=False)
    original = journal.JournalWriter._write_held  # the worker's group commit writes with it
    stopped: list[set[str]] = []

    def write_held(self: journal.JournalWriter, payload: bytes) -> Any:
        # SIGTERM arrives while a batch no attempt waits for is being written
        kinds = {r["t"] for r in journal.parse(payload, start=0, path="batch").records}
        if "done" in kinds and "att" not in kinds and not worker.draining:
            stopped.append(kinds)
            loop.call_soon_threadsafe(worker.stop)
            time.sleep(0.2)
        return original(self, payload)

    monkeypatch.setattr(journal.JournalWriter, "_write_held", write_held)

    async def main() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        await worker.run(until=lambda: settled(directory, run_id))  # bounded, stop or not

    loop: asyncio.AbstractEventLoop
    asyncio.run(main())
    st = state_of(directory, run_id)
    executed = {int(line.split()[1]) for line in log_lines(log)}
    assert stopped, "the test never stopped the worker mid-write"
    for n in executed:
        assert st.steps[n].outcome == "done", f"step {n} finished, but its `done` was lost"
