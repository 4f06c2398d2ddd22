"""SPEC §8: schedules, under the fake clock (and once for real with worker processes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pattern_flows as pf
import pytest

from wfl import Client, WflError
from wfl import schedules as sch
from wfl.clock import FakeClock
from wfl.testing import WorkflowTestEnv

BERLIN = ZoneInfo("Europe/Berlin")
FLOWS = Path(pf.__file__).resolve()
WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"


def at(*args: int) -> float:
    """Epoch seconds of a UTC wall time."""
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def local_slots(env: WorkflowTestEnv, name: str) -> list[str]:
    runs = [r for r in env.client.list() if r.schedule == name]
    runs.sort(key=lambda r: r.scheduled_at)
    return [datetime.fromisoformat(r.scheduled_at).astimezone(BERLIN).strftime("%m-%d %H:%M %Z")
            for r in runs]  # fmt: skip


# -- cron and zones -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "bad minute field '61'"),
        ("0 24 * * *", "bad hour field '24'"),
        ("0 9 32 * *", "bad day-of-month field '32'"),
        ("0 9 * 13 *", "bad month field '13'"),
        ("0 9 * * FUNDAY", "bad day-of-week field 'FUNDAY'"),
        ("0 9 * *", "it has 4 fields, cron has 5"),
    ],
)
def test_an_invalid_cron_expression_names_the_field(expr: str, message: str) -> None:
    with pytest.raises(WflError, match=message):
        sch.check_cron(expr)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(WflError, match="unknown time zone 'Europe/Berlinn'"):
        sch.zone("Europe/Berlinn")


# -- firing -------------------------------------------------------------------------------------


def test_a_year_of_a_weekly_schedule_in_milliseconds() -> None:
    with WorkflowTestEnv(start=at(2026, 1, 1)) as env:
        env.client.add_schedule("weekly", pf.report, cron="0 9 * * MON", tz="Europe/Berlin",
                                args={"kind": "weekly"})  # fmt: skip
        started = time.perf_counter()
        env.advance(365 * 86400)
        elapsed = time.perf_counter() - started
        slots = local_slots(env, "weekly")
        assert len(slots) == 52  # the Mondays of 2026
        # 09:00 Berlin time all year: CET in winter, CEST in summer
        assert {s[6:] for s in slots} == {"09:00 CET", "09:00 CEST"}
        assert all(r.state == "completed" for r in env.client.list())
        assert pf.calls["report-weekly"] == 52
        assert elapsed < 20
        (listed,) = env.client.list_schedules()
        assert listed["last_run_state"] == "completed"
        assert listed["next_fire_at"] == "2027-01-04T08:00:00.000+00:00"


def test_spring_forward_night_fires_the_missing_hour_once() -> None:
    # 2026-03-29 in Berlin: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist
    with WorkflowTestEnv(start=at(2026, 3, 27, 12)) as env:
        env.client.add_schedule("nightly", pf.report, cron="30 2 * * *", tz="Europe/Berlin")
        env.advance(3 * 86400)
        assert local_slots(env, "nightly") == [
            "03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST",
        ]  # fmt: skip


def test_fall_back_night_fires_a_daily_slot_once_and_an_hourly_one_for_both_hours() -> None:
    # 2026-10-25 in Berlin: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice
    with WorkflowTestEnv(start=at(2026, 10, 23, 12)) as env:
        env.client.add_schedule("nightly", pf.report, cron="30 2 * * *", tz="Europe/Berlin")
        env.client.add_schedule("hourly", pf.report, cron="0 * * * *", tz="Europe/Berlin")
        env.advance(3 * 86400)
        assert local_slots(env, "nightly") == [
            "10-24 02:30 CEST", "10-25 02:30 CEST", "10-26 02:30 CET",
        ]  # fmt: skip
        hourly = [s for s in local_slots(env, "hourly") if s.startswith("10-25")]
        assert len(hourly) == 25  # the day has 25 hours
        assert hourly[2:5] == ["10-25 02:00 CEST", "10-25 02:00 CET", "10-25 03:00 CET"]


@pytest.mark.parametrize(("catch_up", "fired"), [("last", 1), ("all", 3), ("none", 0)])
def test_slots_missed_while_no_worker_ran(catch_up: str, fired: int) -> None:
    with WorkflowTestEnv(start=at(2026, 5, 4, 10, 30)) as env:
        # (overlap allow: with skip, the runs of "all" would wait for each other)
        env.client.add_schedule("hourly", pf.report, cron="0 * * * *", catch_up=catch_up,
                                overlap="allow")  # fmt: skip
        env.clock.advance(3 * 3600)  # 11:00, 12:00, 13:00 pass with no worker up
        env.run_until_idle()
        assert len(env.client.list()) == fired
        if catch_up == "last":
            assert local_slots(env, "hourly") == ["05-04 15:00 CEST"]  # 13:00 UTC
        env.advance(3600)  # back to normal: the 14:00 slot fires on time
        assert len(env.client.list()) == fired + 1


def test_overlap_skip_skips_slots_while_the_last_run_goes_and_allow_does_not() -> None:
    with WorkflowTestEnv(start=at(2026, 5, 4)) as env:
        env.client.add_schedule("skip", pf.long_report, cron="0 12 * * *")  # 3-day runs
        env.client.add_schedule("allow", pf.long_report, cron="0 12 * * *", overlap="allow")
        env.advance(6 * 86400 + 3600)
        skip = [r.scheduled_at[:10] for r in env.client.list() if r.schedule == "skip"]
        allow = [r.scheduled_at[:10] for r in env.client.list() if r.schedule == "allow"]
        # the first run ends at 05-07 12:00 sharp: that slot still finds it going
        assert sorted(skip) == ["2026-05-04", "2026-05-08"]
        assert len(allow) == 6  # 05-04 ... 05-09


def test_pause_resume_remove_and_trigger_from_python() -> None:
    with WorkflowTestEnv(start=at(2026, 5, 4)) as env:
        c = env.client
        c.add_schedule("daily", pf.report, cron="0 6 * * *")
        with pytest.raises(WflError, match="already exists"):
            c.add_schedule("daily", pf.report, cron="0 7 * * *")
        env.advance(86400)
        assert len(c.list()) == 1
        c.pause_schedule("daily")
        assert c.list_schedules()[0]["paused"] is True
        assert c.list_schedules()[0]["next_fire_at"] is None
        env.advance(2 * 86400)
        assert len(c.list()) == 1
        c.resume_schedule("daily")  # the paused days are not made up for
        env.run_until_idle()
        assert len(c.list()) == 1
        run_id = c.trigger_schedule("daily")
        env.run_until_idle()
        st = c.status(run_id)
        assert st.state == "completed"
        assert st.schedule == "daily"
        assert c.list_schedules()[0]["last_run"] == run_id
        c.remove_schedule("daily")
        assert c.list_schedules() == []
        with pytest.raises(WflError, match="no schedule named 'daily'"):
            c.pause_schedule("daily")
        env.advance(3 * 86400)
        assert len(c.list()) == 2


# (several workers firing one slot at once: tests/test_patterns_stores.py, on both stores)


# -- the command line, and real workers ---------------------------------------------------------


def wfl(*argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WFL, *argv], capture_output=True, text=True, timeout=60, check=check)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cron", "0 25 * * *"], "bad hour field '25'"),
        (["--cron", "0 9 * * *", "--tz", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
        (["--cron", "0 9 * * *", "--overlap", "maybe"], "--overlap must be one of skip, allow"),
        (["--cron", "0 9 * * *", "--catch-up", "some"], "--catch-up must be one of"),
    ],
)
def test_wfl_schedule_add_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    proc = wfl("schedule", "add", "nightly", f"{FLOWS}:report", *extra, "--dir", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    assert Client(tmp_path).list_schedules() == []


@pytest.mark.parametrize("name", ["a/b", "../x", ".hidden", "x" * 101, "tab\there"])
def test_a_bad_schedule_name_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, name: str
) -> None:
    proc = wfl("schedule", "add", name, f"{FLOWS}:report", "--cron", "0 2 * * *",
               "--dir", str(tmp_path))  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert "invalid schedule name" in proc.stderr
    assert not (tmp_path / "schedules").exists() or list((tmp_path / "schedules").iterdir()) == []
    with pytest.raises(WflError, match="invalid schedule name"):
        Client(tmp_path).add_schedule(name, pf.report, cron="0 2 * * *")


def test_wfl_schedule_commands(store_spec: str) -> None:
    d = ["--store", store_spec]
    add = wfl("schedule", "add", "nightly", f"{FLOWS}:report", "--cron", "0 2 * * *",
              "--tz", "Europe/Berlin", "--arg", "kind=nightly", *d, check=True)  # fmt: skip
    assert add.stdout.startswith("added schedule nightly: next run 20")
    assert add.stdout.endswith(" 02:00 CET\n") or add.stdout.endswith(" 02:00 CEST\n")
    dup = wfl("schedule", "add", "nightly", f"{FLOWS}:report", "--cron", "0 3 * * *", *d)
    assert dup.returncode == 2
    assert dup.stderr.count("\n") == 1
    assert "already exists" in dup.stderr
    (row,) = __import__("json").loads(wfl("schedule", "list", "--json", *d, check=True).stdout)
    assert row["name"] == "nightly"
    assert row["cron"] == "0 2 * * *"
    assert row["tz"] == "Europe/Berlin"
    assert row["args"] == {"kind": "nightly"}
    assert row["paused"] is False
    assert row["last_run"] is None
    assert datetime.fromisoformat(row["next_fire_at"]).astimezone(BERLIN).hour == 2
    assert "nightly" in wfl("schedule", "list", *d, check=True).stdout
    assert wfl("schedule", "pause", "nightly", *d, check=True).stdout == "paused schedule nightly\n"
    assert wfl("schedule", "resume", "nightly", *d, check=True).stdout.startswith("resumed")
    run_id = wfl("schedule", "trigger", "nightly", *d, check=True).stdout.strip()
    assert Client(store=store_spec).status(run_id).schedule == "nightly"
    assert wfl("schedule", "remove", "nightly", *d, check=True).stdout.startswith("removed")
    gone = wfl("schedule", "pause", "nightly", *d)
    assert gone.returncode == 2
    assert "no schedule named 'nightly'" in gone.stderr


@pytest.mark.slow
def test_three_real_workers_start_one_run_for_a_due_slot(store_spec: str) -> None:
    # the schedule was added two minutes "ago", so one slot is due as the workers come up
    past = FakeClock(time.time() - 120)
    Client(store=store_spec, clock=past).add_schedule("minutely", pf.report, cron="* * * * *")
    workers = [
        subprocess.Popen(
            [WFL, "worker", "--store", store_spec],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:
        client = Client(store=store_spec)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = client.list()
            if runs and all(r.state == "completed" for r in runs):
                break
            time.sleep(0.05)  # polling another process's progress, not waiting out a race
        runs = client.list()
        slots = {r.scheduled_at for r in runs}
        assert len(runs) == len(slots) >= 1  # one run per slot, however many workers
        assert all(r.state == "completed" for r in runs)
        assert client.list_schedules()[0]["last_run_state"] == "completed"
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)


def test_a_schedules_last_run_is_its_chain_and_overlap_waits_for_the_chains_end() -> None:
    with WorkflowTestEnv(start=at(2026, 5, 4, 11)) as env:
        env.client.add_schedule("poll", pf.poller, cron="0 12 * * *", args={"until": 30})
        env.advance(26 * 3600)  # 12:00 fired; its run continued as new at 12:00 the next day
        (row,) = env.client.list_schedules()
        first = row["last_run"]
        assert env.status(first).continued_as is not None
        assert row["last_run_state"] == "in_progress"  # the chain goes on
        slots = [r.scheduled_at for r in env.client.list() if r.continued_from is None]
        assert slots == ["2026-05-04T12:00:00.000+00:00"]  # 05-05 12:00 skipped: still going
        env.advance(86400)  # the chain ended at 05-05 18:00: the 05-06 slot fires
        slots = [r.scheduled_at for r in env.client.list() if r.continued_from is None]
        assert sorted(slots)[1:] == ["2026-05-06T12:00:00.000+00:00"]
        assert sch._chain_state(env.client.store, first) == "completed"
