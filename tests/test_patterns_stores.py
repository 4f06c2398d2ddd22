"""SPEC §8 on every store (a journal directory and PostgreSQL): keys, schedules,
continue-as-new, deadlines and progress, through the Store protocol only."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pattern_flows as pf
import pytest

from wfl import Client, WflError, WorkflowFailed
from wfl import schedules as sch
from wfl.clock import FakeClock
from wfl.testing import WorkflowTestEnv

FLOWS = Path(pf.__file__).resolve()
WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"
START = datetime(2026, 3, 1, tzinfo=UTC).timestamp()


def test_a_key_holds_one_run_until_cleanup(store_spec: str) -> None:
    with WorkflowTestEnv(store=store_spec) as env:
        first = env.start(pf.report, {"kind": "a"}, key="order-42")
        assert env.start(pf.report, {"kind": "b"}, key="order-42") == first
        env.run_until_idle()
        assert env.start(pf.report, key="order-42") == first  # finished: still held
        assert env.status(first).key == "order-42"
        assert env.client.cleanup(first) == [first]
        second = env.start(pf.report, key="order-42")
        assert second != first


def test_clients_racing_for_one_key_get_one_run(store_spec: str) -> None:
    barrier = threading.Barrier(8)
    got: list[str] = []

    def start() -> None:
        client = Client(store=store_spec)
        barrier.wait()
        got.append(client.start(pf.report, key="race"))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1
    assert [r.id for r in Client(store=store_spec).list()] == got[:1]


@pytest.mark.slow
def test_ten_processes_starting_one_key_get_one_run(store_spec: str) -> None:
    procs = [
        subprocess.Popen(
            [WFL, "start", f"{FLOWS}:report", "--key", "k", "--store", store_spec],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(10)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, [o[1] for o in outs]
    assert len({o[0] for o in outs}) == 1
    assert len(Client(store=store_spec).list()) == 1


def test_schedules_are_stored_listed_changed_and_removed(store_spec: str) -> None:
    client = Client(store=store_spec, clock=FakeClock(START))
    client.add_schedule("nightly", pf.report, cron="0 2 * * *", tz="Europe/Berlin",
                        args={"kind": "nightly"})  # fmt: skip
    with pytest.raises(WflError, match="already exists"):
        client.add_schedule("nightly", pf.report, cron="0 3 * * *")
    (row,) = client.list_schedules()
    assert row["next_fire_at"] == "2026-03-01T01:00:00.000+00:00"
    assert row["args"] == {"kind": "nightly"}
    client.pause_schedule("nightly")
    assert client.list_schedules()[0]["paused"] is True
    client.resume_schedule("nightly")
    client.remove_schedule("nightly")
    assert client.list_schedules() == []
    with pytest.raises(WflError, match="no schedule named"):
        client.remove_schedule("nightly")


def test_eight_weeks_of_a_weekly_schedule(store_spec: str) -> None:
    with WorkflowTestEnv(store=store_spec, start=START) as env:
        env.client.add_schedule("weekly", pf.report, cron="0 9 * * MON", tz="Europe/Berlin")
        env.advance(8 * 7 * 86400)
        runs = env.client.list()
        assert len(runs) == 8
        assert {r.state for r in runs} == {"completed"}
        assert {r.schedule for r in runs} == {"weekly"}
        assert len({r.key for r in runs}) == 8


def test_workers_firing_one_slot_at_once_start_one_run(store_spec: str) -> None:
    clock = FakeClock(START)
    Client(store=store_spec, clock=clock).add_schedule("hourly", pf.report, cron="0 * * * *")
    clock.advance(3600)
    barrier = threading.Barrier(3)
    fired: list[sch.Fired] = []

    def fire() -> None:
        store = Client(store=store_spec, clock=clock).store
        barrier.wait()
        fired.extend(sch.fire_due(store, clock)[0])

    threads = [threading.Thread(target=fire) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({f.run_id for f in fired}) == 1
    assert len(Client(store=store_spec).list()) == 1


def test_continue_as_new_deadline_and_progress(store_spec: str) -> None:
    with WorkflowTestEnv(store=store_spec) as env:
        first = env.start(pf.poller, {"until": 30}, on_complete=pf.note)
        env.run_until_idle()
        assert env.client.wait(first, timeout=5) == {"polls": 30, "seen": 30}
        last = env.status(first).continued_as
        assert env.status(last).continued_from == first
        assert env.status(last).progress == {"cursor": 30}
        assert [c[0] for c in pf.completions] == [last]
        with pytest.raises(WorkflowFailed, match="DeadlineExceeded"):
            env.run(pf.slow, {"hours": 2}, deadline=60)
