"""`wfl migrate --from STORE --to STORE [--finished]` (SPEC §7): runs move between a journal
directory and PostgreSQL record for record, in progress ones included while no worker serves
the source; the source is untouched; a run carries on in its new store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import flows
import pytest

from wfl import Client
from wfl.testing import WorkflowTestEnv

WFL = str(Path(sys.executable).parent / "wfl")


def wfl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WFL_DIR", "WFL_STORE")}
    return subprocess.run([WFL, *args], capture_output=True, text=True, env=env, timeout=120)


def snapshot(spec: str) -> dict[str, list[dict[str, object]]]:
    store = Client(store=spec).store
    return {r: store.read(r) for r in sorted(store.run_ids())}


@pytest.mark.slow
def test_migrate_a_directory_to_postgresql_and_back(tmp_path: Path, pg_url: str) -> None:
    directory = tmp_path / "runs"
    with WorkflowTestEnv(directory) as env:
        done = env.start(flows.three_steps)
        env.run_until_idle()
        waiting = env.start(flows.waits)  # in progress: waits for event "go"
        env.run_until_idle()
        failed = env.start(flows.child, {"n": 1, "fail": True})
        env.run_until_idle()
    before = snapshot(str(directory))
    assert Client(directory).status(waiting).state == "in_progress"
    Client(directory).add_schedule("nightly", flows.three_steps, cron="0 3 * * *")

    moved = wfl("migrate", "--from", str(directory), "--to", pg_url)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith("copied 3 runs (1 in progress)")
    assert moved.stdout.endswith("; 1 schedules copied\n")
    assert snapshot(pg_url) == before == snapshot(str(directory))  # source untouched
    assert Client(store=pg_url).store.schedules() == Client(directory).store.schedules()

    again = wfl("migrate", "--from", str(directory), "--to", pg_url)
    assert again.returncode == 0
    assert "copied 0 runs" in again.stdout
    assert "3 already there" in again.stdout

    # the run carries on in its new store
    with WorkflowTestEnv(store=pg_url) as env:
        env.send_event(waiting, "go", 7)
        env.run_until_idle()
        assert env.result(waiting) == 7
        assert env.result(done) == ["s0", "s2", "s4"]
        assert env.status(failed).state == "failed"

    back = tmp_path / "back"
    finished = wfl("migrate", "--from", pg_url, "--to", f"file:{back}", "--finished")
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.startswith("copied 3 runs (0 in progress)")
    assert snapshot(str(back)) == snapshot(pg_url)


def test_migrate_refuses_unfinished_runs_while_a_worker_serves_the_source(
    tmp_path: Path,
) -> None:
    source, target = tmp_path / "a", tmp_path / "b"
    Client(source).start(flows.three_steps)
    (source / "workers").mkdir(parents=True, exist_ok=True)
    listening = Client(source).store.listen()  # a live worker's wake-up socket and marker
    assert listening is not None
    try:
        refused = wfl("migrate", "--from", str(source), "--to", str(target))
        assert refused.returncode == 2
        assert "stop its workers" in refused.stderr
        assert refused.stderr.count("\n") == 1
        only_finished = wfl("migrate", "--from", str(source), "--to", str(target), "--finished")
        assert only_finished.returncode == 0
        assert only_finished.stdout.startswith("copied 0 runs")
    finally:
        listening[1].close()
    assert wfl("migrate", "--from", str(source), "--to", str(source)).returncode == 2


def test_idempotency_keys_move_with_their_runs_both_ways(tmp_path: Path, pg_url: str) -> None:
    directory, back = tmp_path / "runs", tmp_path / "back"
    source = Client(directory)
    keyed = source.start(flows.three_steps, key="order-42")
    plain = source.start(flows.three_steps)
    freed = source.start(flows.three_steps, key="order-7")
    source.store.free_key("order-7", freed)  # as cleanup leaves it: the key is free again

    moved = wfl("migrate", "--from", str(directory), "--to", pg_url)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith("copied 3 runs (3 in progress)")
    assert "; 1 idempotency keys" in moved.stdout
    target = Client(store=pg_url)
    assert target.start(flows.three_steps, key="order-42") == keyed  # the key came along
    assert target.store.run_for_key("order-7") is None
    assert sorted(target.store.run_ids()) == sorted([keyed, plain, freed])

    home = wfl("migrate", "--from", pg_url, "--to", str(back))
    assert home.returncode == 0, home.stderr
    assert "; 1 idempotency keys" in home.stdout
    assert Client(back).start(flows.three_steps, key="order-42") == keyed
    assert Client(back).store.run_for_key("order-7") is None
    assert snapshot(str(back)) == snapshot(str(directory))


@pytest.mark.parametrize("to", ["file", "postgresql"])
def test_a_key_the_target_holds_for_another_run_is_reported(
    tmp_path: Path, pg_url: str, to: str
) -> None:
    directory = tmp_path / "runs"
    keyed = Client(directory).start(flows.three_steps, key="order-42")
    target_spec = str(tmp_path / "target") if to == "file" else pg_url
    other = Client(store=target_spec).start(flows.waits, key="order-42")

    moved = wfl("migrate", "--from", str(directory), "--to", target_spec)
    assert moved.returncode == 1
    assert moved.stderr == (
        f"wfl: {keyed}: copied without its key 'order-42': the target holds it for run {other}\n"
    )
    target = Client(store=target_spec)
    assert target.store.run_for_key("order-42") == other  # untouched
    assert target.store.read(keyed) == Client(directory).store.read(keyed)  # copied all the same


@pytest.mark.parametrize("to", ["file", "postgresql"])
def test_a_run_already_in_the_target_gets_its_key(tmp_path: Path, pg_url: str, to: str) -> None:
    directory = tmp_path / "runs"
    keyed = Client(directory).start(flows.three_steps, key="order-42")
    target_spec = str(tmp_path / "target") if to == "file" else pg_url
    assert wfl("migrate", "--from", str(directory), "--to", target_spec).returncode == 0
    Client(store=target_spec).store.free_key("order-42", keyed)  # as an older wfl copied it

    again = wfl("migrate", "--from", str(directory), "--to", target_spec)
    assert again.returncode == 0, again.stderr
    assert "copied 0 runs" in again.stdout
    assert "1 already there; 1 idempotency keys" in again.stdout
    assert Client(store=target_spec).store.run_for_key("order-42") == keyed
