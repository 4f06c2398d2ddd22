"""Leases of the journal directory store (wfl/leases.py): an OFD lock on a byte range of the
run's journal far past its data, or (where F_OFD_* is missing: `lockfile`, forced here by
monkeypatch) flock() of locks/<id>.lock. Both give the same guarantees: one holder across
processes and stores, `is_leased` for readers, death with the holder (SIGKILL), no
interaction with the journal's append lock. Other processes are real subprocesses."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import flows
import pytest
from crash_flows.harness import CHAOS

from wfl import Client, journal, leases, ops, records
from wfl.errors import RunNotFound
from wfl.store import FileStore
from wfl.testing import WorkflowTestEnv

# Another process's view of a run's lease: `python -c CHILD DIR RUN MODE ACTION`.
CHILD = """
import sys
from wfl import leases, records
from wfl.store import FileStore
directory, run_id, mode, action = sys.argv[1:]
if mode == "lockfile":
    leases.OFD = False
store = FileStore(directory)
if action == "try":
    print("free" if store.try_lease(run_id) is not None else "busy")
elif action == "leased":
    print("leased" if store.is_leased(run_id) else "free")
elif action == "hold":
    lease = store.try_lease(run_id)
    print("held" if lease is not None else "busy", flush=True)
    sys.stdin.read()  # hold it until killed
elif action == "append":  # what `wfl cancel` / `send-event` do: append under the journal's flock
    store.update(run_id, lambda existing: [records.event("e2", "x", None, 1.0)])
    print("appended")
"""


@pytest.fixture(params=["ofd", "lockfile"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "ofd" and not leases.OFD:
        pytest.skip("no F_OFD_SETLK on this platform")
    if request.param == "lockfile":
        monkeypatch.setattr(leases, "OFD", False)
    return str(request.param)


@pytest.fixture
def run(tmp_path: Path) -> tuple[FileStore, str]:
    directory = tmp_path / "runs"
    run_id = Client(directory).start(f"{CHAOS}:five", {"log": "/dev/null"})
    return FileStore(directory), run_id


def other(store: FileStore, run_id: str, mode: str, action: str) -> str:
    """`action` on the run's lease, done by another process."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(store.dir), run_id, mode, action],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def holder(run: tuple[FileStore, str], mode: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the run's lease until it is killed."""
    store, run_id = run
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store.dir), run_id, mode, "hold"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_lease_excludes_other_processes_and_other_stores(
    run: tuple[FileStore, str], mode: str
) -> None:
    store, run_id = run
    lease = store.try_lease(run_id)
    assert lease is not None
    assert other(store, run_id, mode, "try") == "busy"
    assert other(store, run_id, mode, "leased") == "leased"
    assert FileStore(store.dir).try_lease(run_id) is None  # a second store in this process
    assert store.is_leased(run_id)
    lease.release()
    assert not store.is_leased(run_id)
    assert other(store, run_id, mode, "leased") == "free"
    assert other(store, run_id, mode, "try") == "free"
    again = store.try_lease(run_id)
    assert again is not None
    again.release()


def test_reads_and_appends_in_the_leasing_process_keep_its_lease(
    run: tuple[FileStore, str], mode: str
) -> None:
    """The trap of classic POSIX locks: they are the process's, and closing ANY descriptor of
    the file drops them. A worker process also reads journals (status, why) and appends to
    them (cancel): each of those opens and closes the journal; the lease must survive."""
    store, run_id = run
    lease = store.try_lease(run_id)
    assert lease is not None
    writer = store.writer(run_id)
    writer.read_all()
    client = Client(store.dir)
    client.status(run_id)  # opens, reads, closes the journal
    store.read(run_id)
    assert store.is_leased(run_id)  # (opens and closes it too)
    store.update(run_id, lambda existing: [records.event("e1", "go", 1, 1.0)])  # `wfl send-event`
    journal.JournalWriter(store.journal_path(run_id)).close()
    assert other(store, run_id, mode, "try") == "busy"
    writer.close()  # the writer's descriptor goes; the lease stays until released
    assert other(store, run_id, mode, "try") == "busy"
    lease.release()
    assert other(store, run_id, mode, "try") == "free"


def test_a_released_lease_is_free_while_its_writer_is_still_open(
    run: tuple[FileStore, str], mode: str
) -> None:
    store, run_id = run
    lease = store.try_lease(run_id)
    assert lease is not None
    writer = store.writer(run_id)
    writer.read_all()
    lease.release()
    assert other(store, run_id, mode, "try") == "free"
    assert writer.poll() == []  # the writer's own descriptor is still good
    writer.close()


def test_a_killed_holder_frees_the_lease(
    run: tuple[FileStore, str], mode: str, holder: subprocess.Popen[str]
) -> None:
    store, run_id = run
    assert store.try_lease(run_id) is None
    assert store.is_leased(run_id)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert not store.is_leased(run_id)
    lease = store.try_lease(run_id)
    assert lease is not None
    lease.release()


def test_the_lease_and_the_journal_append_lock_never_wait_for_each_other(
    run: tuple[FileStore, str], mode: str, holder: subprocess.Popen[str]
) -> None:
    """A leased run still takes appends from other processes (`wfl cancel`), and a journal
    whose append lock another process holds can still be leased."""
    store, run_id = run
    assert other(store, run_id, mode, "append") == "appended"  # the holder keeps its lease
    assert store.read(run_id)[-1]["t"] == "event"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    fd = os.open(store.journal_path(run_id), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as an appender in the middle of its write
        assert other(store, run_id, mode, "try") == "free"
        lease = store.try_lease(run_id)
        assert lease is not None
        lease.release()
    finally:
        os.close(fd)


def test_cleanup_deletes_a_finished_run_whose_lease_is_still_held(
    run: tuple[FileStore, str], mode: str, holder: subprocess.Popen[str]
) -> None:
    """The lease is not the run's lock: cleanup's check-and-delete (under the journal's
    flock) does not wait for a worker that has yet to let go of a finished run."""
    store, run_id = run
    store.update(run_id, lambda existing: [records.end("canceled", 2.0)])
    store.update(run_id, lambda existing: [records.on_complete_done(2.0, None)])
    assert ops.cleanup(store, run_id) == [run_id]
    assert not store.exists(run_id)


def test_the_writer_reuses_the_lease_descriptor(
    run: tuple[FileStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking a lease and opening the run's writer cost one open() in all (before: the lock
    file's, then the journal's)."""
    if not leases.OFD:
        pytest.skip("no F_OFD_SETLK on this platform")
    store, run_id = run
    opened: list[str] = []
    real_open = os.open

    def counting_open(path: object, *args: object, **kwargs: object) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", counting_open)
    lease = store.try_lease(run_id)
    assert lease is not None
    writer = store.writer(run_id)
    assert writer.read_all()[0]["t"] == "run"
    writer.close()
    lease.release()
    monkeypatch.undo()
    assert opened == [str(store.journal_path(run_id))]


def test_a_run_that_is_gone_when_leased_gets_no_writer(tmp_path: Path) -> None:
    """No journal to lock: the lease holds nothing, so its writer must not open a journal
    that appears afterwards (that run would be driven unleased); news of it brings a retry."""
    if not leases.OFD:
        pytest.skip("no F_OFD_SETLK on this platform")
    store = FileStore(tmp_path / "runs")
    run_id = "abc123"
    assert not store.is_leased(run_id)
    lease = store.try_lease(run_id)
    assert lease is not None
    store.create_run(flows_run, run_id=run_id)
    with pytest.raises(RunNotFound):
        store.writer(run_id)
    lease.release()
    again = store.try_lease(run_id)
    assert again is not None
    store.writer(run_id).close()
    again.release()


def test_a_journal_deleted_while_it_is_being_leased_gets_no_writer(
    run: tuple[FileStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if not leases.OFD:
        pytest.skip("no F_OFD_SETLK on this platform")
    store, run_id = run
    real_lock = leases.lock

    def cleanup_first(fd: int) -> bool:  # cleanup wins the race between open and lock
        store.journal_path(run_id).unlink()
        return real_lock(fd)

    monkeypatch.setattr(leases, "lock", cleanup_first)
    lease = store.try_lease(run_id)
    assert lease is not None
    with pytest.raises(RunNotFound):
        store.writer(run_id)
    lease.release()


def test_a_worker_drives_runs_with_either_kind_of_lease_and_leaves_lock_files_only_in_fallback(
    mode: str,
) -> None:
    with WorkflowTestEnv() as env:
        run_id = env.start(flows.one_action, {"key": mode})
        env.run_until_idle()
        assert env.result(run_id) == mode
        store = env.client.store
        assert isinstance(store, FileStore)
        assert (store.dir / "locks").exists() == (mode == "lockfile")
        assert not store.is_leased(run_id)


def test_a_worker_warns_when_lock_files_of_an_older_wfl_are_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Older workers lease through locks/ and do not see these leases: a worker starting on a
    directory they served says so once (they must all be stopped), until locks/ is gone."""
    if not leases.OFD:
        pytest.skip("no F_OFD_SETLK on this platform")
    store = FileStore(tmp_path / "runs")
    store.ensure()
    assert not (store.dir / "locks").exists()
    for older in (True, False):
        if older:
            (store.dir / "locks").mkdir()
            (store.dir / "locks" / "abc.lock").touch()
        else:
            shutil.rmtree(store.dir / "locks")
        caplog.clear()
        opened = store.listen()
        assert opened is not None
        opened[1].close()
        watcher = store.listen(worker=False)  # (a UI watching drives nothing)
        assert watcher is not None
        watcher[1].close()
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        if older:
            assert len(warned) == 1
            assert f"{store.dir}/locks/ is from an older wfl" in warned[0]
        else:
            assert warned == []


def flows_run(run_id: str) -> list[dict[str, object]]:
    return [
        records.run(run_id=run_id, workflow="five", flow=CHAOS, flow_sha="0", args={},
                    created_at=1.0, version=0, on_complete=None, context=None, parent=None)
    ]  # fmt: skip
