"""Several `wfl worker` processes on one directory (SPEC §3): a run is driven by one worker at
a time, no completed step runs again, a dead worker releases its runs, and concurrent
`wfl start` / `send-event` / `cancel` from many processes lose nothing and apply nothing
twice. Flows: tests/crash_flows/chaos.py."""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from crash_flows import chaos
from crash_flows.harness import (
    CHAOS,
    WorkerProc,
    account,
    executions,
    journals,
    line_count,
    log_lines,
    oc_calls,
    settled,
    spawn_wfl,
    wait_for,
    worker_listening,
)

from wfl import Client, journal, leases, records

ON_COMPLETE = f"{CHAOS}:finished"


def _start_many(directory: Path, log: Path, n: int, *extra: str) -> list[str]:
    """`wfl start` n runs of `five` from n processes at once; their run ids."""
    procs = [
        spawn_wfl("start", f"{CHAOS}:five", "--dir", str(directory), "--arg", f"log={log}", *extra)
        for _ in range(n)
    ]
    ids = []
    for p in procs:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        ids.append(out.strip())
    return ids


def _pickup_delay(records: list[dict[str, object]]) -> float:
    """Seconds from a run's creation to its first attempt."""
    created = float(records[0]["created_at"])  # type: ignore[arg-type]
    first = min(float(r["at"]) for r in records if r["t"] == "att")  # type: ignore[arg-type]
    return first - created


def _held_runs(pid: int, directory: Path) -> set[str]:
    """Runs whose lease the process `pid` holds right now: journals it has open with a lock
    on their lease range (/proc/PID/fdinfo lists an open file's locks), or, where leases
    are lock files, the lock files it has open."""
    held = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(fd_dir / fd)
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        name = Path(target).name
        lease_range = f" {leases.LEASE_OFFSET} {leases.LEASE_OFFSET}"
        if target.startswith(str(directory / "locks")) and name.endswith(".lock"):
            held.add(name[: -len(".lock")])
        elif name.endswith(".journal") and any(
            line.startswith("lock:") and "OFDLCK" in line and line.endswith(lease_range)
            for line in info.splitlines()
        ):
            held.add(name[: -len(".journal")])
    return held


@pytest.mark.slow
def test_three_workers_execute_every_step_exactly_once(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    early = _start_many(directory, log, 10)  # waiting before any worker is up
    workers = [WorkerProc(directory) for _ in range(3)]
    try:
        wait_for(worker_listening(directory, 3), 10.0, "three workers to listen")
        late = _start_many(directory, log, 20)
        run_ids = early + late
        wait_for(lambda: all(settled(directory, r) for r in run_ids), 30.0, "every run to end")
    finally:
        for w in workers:
            w.kill()
    client = Client(directory)
    for r in run_ids:
        assert client.wait(r, timeout=1) == chaos.FIVE_EXPECTED
    ran = executions(log)
    assert len(ran) == 30 * 5
    assert set(ran.values()) == {1}, "a step executed twice"
    assert {attempt for (_, _, attempt) in ran} == {1}
    acc = account(directory, log, run_ids)
    assert not acc.problems, "\n".join(acc.problems)
    assert acc.steps == acc.attempts == acc.executions == 150
    all_records = journals(directory)
    delays = [_pickup_delay(all_records[r]) for r in late]
    assert max(delays) < 5.0, "a run waited for the 10 s rescan: a wake-up was lost"
    busy = [sum("step_started" in line for line in w.output().splitlines()) for w in workers]
    print(
        f"\n3 workers: {len(run_ids)} runs, {acc.steps} steps, each exactly once; steps per "
        f"worker {busy}; slowest pick-up of a run started while they were up {max(delays):.3f} s"
    )


@pytest.mark.slow
def test_a_killed_worker_releases_its_runs_to_the_others(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    workers = [WorkerProc(directory) for _ in range(3)]
    try:
        wait_for(worker_listening(directory, 3), 10.0, "three workers to listen")
        client = Client(directory)
        run_ids = [
            client.start(f"{CHAOS}:five", {"log": str(log), "retry": True}) for _ in range(30)
        ]
        wait_for(lambda: line_count(log) >= 30, 20.0, "some progress")
        victim, held = workers[0], set()

        def someone_drives() -> bool:  # pick a worker caught holding unfinished runs
            nonlocal victim, held
            for w in workers:
                held = {r for r in _held_runs(w.pid, directory) if not settled(directory, r)}
                if held:
                    victim = w
                    return True
            return False

        wait_for(someone_drives, 20.0, "a worker to hold a lease", every=0.001)
        victim.kill()
        orphans = {r for r in held if not settled(directory, r)}
        wait_for(lambda: all(settled(directory, r) for r in run_ids), 30.0, "every run to end")
    finally:
        for w in workers:
            w.kill()
    for r in run_ids:
        assert client.wait(r, timeout=1) == chaos.FIVE_EXPECTED
    acc = account(directory, log, run_ids)
    assert not acc.problems, "\n".join(acc.problems)
    assert acc.duplicates == 0
    assert orphans, "the victim held no unfinished run when killed: nothing was proven"
    print(
        f"\nkilled 1 of 3 workers holding {len(orphans)} unfinished runs, all finished by "
        f"the others; {acc.summary()}"
    )


@pytest.mark.slow
def test_concurrent_starts_events_and_cancels_lose_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    log, oc_log = tmp_path / "effects.log", tmp_path / "on_complete.log"
    context = json.dumps({"oc_log": str(oc_log)})
    workers = [WorkerProc(directory) for _ in range(3)]
    try:
        wait_for(worker_listening(directory, 3), 10.0, "three workers to listen")
        starts = [
            spawn_wfl(
                "start",
                f"{CHAOS}:{flow}",
                "--dir",
                str(directory),
                "--arg",
                f"log={log}",
                "--on-complete",
                ON_COMPLETE,
                "--context",
                context,
            )
            for flow in ["gate"] * 10 + ["five"] * 10
        ]
        ids = []
        for p in starts:
            out, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
            ids.append(out.strip())
        gated, fives = ids[:10], ids[10:]
        told, canceled = gated[:5], gated[5:]
        # 10 send-events and 5 cancels from 15 processes at once, racing the workers
        others = [
            spawn_wfl(
                "send-event", r, name, "--value", json.dumps(f"{name}-{r}"), "--dir", str(directory)
            )
            for r in told
            for name in ("b", "a")
        ] + [spawn_wfl("cancel", r, "--dir", str(directory)) for r in canceled]
        for p in others:
            _, err = p.communicate(timeout=30)
            assert p.returncode == 0, err
        wait_for(lambda: all(settled(directory, r) for r in ids), 30.0, "every run to end")
    finally:
        for w in workers:
            w.kill()
    client = Client(directory)
    records = journals(directory)
    calls = oc_calls(oc_log)
    for r in told:
        assert client.wait(r, timeout=1) == [f"a-{r}", f"b-{r}"]
        events = [x for x in records[r] if x["t"] == "event"]
        assert sorted(e["name"] for e in events) == ["a", "b"]  # none lost, none doubled
        consumed = [x["event_id"] for x in records[r] if x["t"] == "done" and x.get("event_id")]
        assert sorted(consumed) == sorted(e["id"] for e in events)  # each consumed once
    notes = Counter(line.split(" ", 3)[3] for line in log_lines(log) if "note=a-" in line)
    assert sorted(notes) == sorted(f"note=a-{r}+b-{r}" for r in told)
    assert set(notes.values()) == {1}
    for r in canceled:
        assert client.status(r).state == "canceled"
        ends = [x for x in records[r] if x["t"] == "end"]
        assert [e["kind"] for e in ends] == ["canceled"]
        assert not any(x["t"] == "event" for x in records[r])
    for r in fives:
        assert client.wait(r, timeout=1) == chaos.FIVE_EXPECTED
    for r in ids:
        assert calls[r] == 1, f"on_complete of {r} ran {calls[r]} times"
        assert sum(x["t"] == "oc" for x in records[r]) == 1
    kinds = Counter(line.split()[1] for line in log_lines(oc_log))
    assert kinds == {"success": 15, "canceled": 5}
    acc = account(directory, log, ids)
    assert not acc.problems, "\n".join(acc.problems)
    assert acc.duplicates == 0
    assert set(executions(log).values()) == {1}


def test_one_writer_used_from_two_threads_while_another_process_appends(tmp_path: Path) -> None:
    """A worker appends to a run's journal from an I/O thread while its event loop polls
    the same JournalWriter (a datagram: an event or a cancel arrived), and `wfl send-event`
    appends from outside. flock() cannot keep two threads sharing one fd apart, so the
    writer must: else poll() takes the append's own records for foreign ones, or the
    append's end offset runs past the file ("truncated by another tool")."""
    path = tmp_path / "run.journal"
    journal.create(path, [records.cancel(0.0)])
    writer = journal.JournalWriter(path)
    writer.read_all()
    errors: list[str] = []
    reported: list[dict[str, object]] = []
    stop = threading.Event()

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception as exc:
                errors.append(repr(exc))
                stop.set()

        return run

    def appender() -> None:  # the driver's flushes, on the worker's I/O thread
        for i in range(1500):
            if stop.is_set():
                return
            reported.extend(writer.append_frames(journal.frame({"t": "mine", "i": i}), sync=False))

    def poller() -> None:  # datagrams, on the worker's event loop
        while not stop.is_set():
            reported.extend(writer.poll())

    def outsider() -> None:  # `wfl send-event` from another process
        for i in range(40):
            journal.update(path, lambda existing, i=i: [{"t": "theirs", "i": i}])

    threads = [threading.Thread(target=guarded(f)) for f in (appender, outsider)]
    polling = threading.Thread(target=guarded(poller))
    for t in [*threads, polling]:
        t.start()
    for t in threads:
        t.join(timeout=60)
    stop.set()
    polling.join(timeout=60)
    reported.extend(writer.poll())
    writer.close()
    assert not errors
    assert [r["t"] for r in reported].count("mine") == 0, "own records reported as foreign"
    assert sorted(r["i"] for r in reported) == list(range(40))  # each foreign one, once
    on_disk = journal.read(path).records
    assert sorted(r["i"] for r in on_disk if r["t"] == "mine") == list(range(1500))
    assert sorted(r["i"] for r in on_disk if r["t"] == "theirs") == list(range(40))


@pytest.mark.slow
def test_a_burst_of_starts_loses_no_wake_up(tmp_path: Path) -> None:
    """A worker's datagram queue holds ~10 messages; 80 starts in a tight loop must still each
    wake it (a dropped one would leave its run waiting for the 10 s rescan)."""
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    worker = WorkerProc(directory)
    try:
        wait_for(worker_listening(directory), 10.0, "the worker to listen")
        client = Client(directory)
        ids = [client.start(f"{CHAOS}:tiny", {"log": str(log)}) for _ in range(80)]
        wait_for(lambda: all(settled(directory, r) for r in ids), 8.0, "every run to end")
    finally:
        worker.kill()
    delays = [_pickup_delay(journals(directory)[r]) for r in ids]
    assert max(delays) < 5.0, f"slowest pick-up {max(delays):.2f} s"
