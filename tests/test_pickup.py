"""Starting a run quickly on a journal directory (issue 16): the pool of empty journal files a
worker keeps ready (wfl/pool.py), taken by `Client.start` instead of creating an inode. The
crash window it adds (a pool file taken and written, not yet linked) is tested with SIGKILL of
a real client process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pickup_flows
from crash_flows.harness import WorkerProc, log_lines, settled, wait_for, wfl, worker_listening

from wfl import Client, journal, pool
from wfl.store import FileStore
from wfl.worker import Worker

FLOWS = str(Path(pickup_flows.__file__))


def pool_files(directory: Path) -> dict[str, int]:
    """name -> inode of each file in the pool."""
    folder = directory / pool.POOL
    return {n: os.stat(folder / n).st_ino for n in (os.listdir(folder) if folder.is_dir() else [])}


def test_start_takes_a_pool_file_and_creates_none(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    store = FileStore(directory)
    store.ensure()
    assert store.refill_pool() == pool.SIZE
    before = pool_files(directory)
    run_id = Client(directory).start(f"{FLOWS}:first", {})
    after = pool_files(directory)
    assert len(after) == pool.SIZE - 1
    taken = set(before) - set(after)
    assert len(taken) == 1
    assert os.stat(directory / f"{run_id}.journal").st_ino == before[taken.pop()]
    assert os.stat(directory / f"{run_id}.journal").st_mode & 0o777 == 0o600
    assert journal.read(directory / f"{run_id}.journal").records[0]["t"] == "run"
    # nothing left behind: no temporary name, no stray journal
    assert sorted(n for n in os.listdir(directory) if n.startswith(".")) == []
    assert store.refill_pool() == 1  # topped up again


def test_without_a_pool_start_creates_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    run_id = Client(directory).start(f"{FLOWS}:first", {})
    assert not (directory / pool.POOL).exists()
    assert journal.read(directory / f"{run_id}.journal").records[0]["t"] == "run"


def test_a_pool_file_that_is_not_free_is_dropped_not_used(tmp_path: Path) -> None:
    """A file in the pool that holds bytes, or has another name (should a file system ever
    bring a pool name back beside a journal made from it), is never written over."""
    directory = tmp_path / "runs"
    store = FileStore(directory)
    store.ensure()
    folder = directory / pool.POOL
    folder.mkdir()
    (folder / "aaaa").write_bytes(b"someone's data")
    elsewhere = tmp_path / "kept"
    elsewhere.write_bytes(b"")
    os.link(elsewhere, folder / "bbbb")
    run_id = Client(directory).start(f"{FLOWS}:first", {})
    assert os.listdir(folder) == []  # both names dropped
    assert elsewhere.read_bytes() == b""
    assert os.stat(directory / f"{run_id}.journal").st_ino != os.stat(elsewhere).st_ino
    assert journal.read(directory / f"{run_id}.journal").records[0]["t"] == "run"


def test_the_pool_is_no_run_to_any_listing(tmp_path: Path) -> None:
    directory = tmp_path / "runs"
    store = FileStore(directory)
    store.ensure()
    store.refill_pool()
    run_id = Client(directory).start(f"{FLOWS}:first", {})
    assert store.run_ids() == [run_id]
    assert store.stray_files() == []
    listed = json.loads(wfl("status", "--dir", str(directory), "--json").stdout)
    assert [r["id"] for r in listed] == [run_id]
    asyncio.run(Worker(directory, listen=False).run(once=True))  # (a worker without news)
    wfl("cleanup", "--dir", str(directory), "--finished")
    assert store.run_ids() == []
    assert len(pool_files(directory)) == pool.SIZE - 1  # cleanup leaves the pool alone


CLIENT = """
import os, signal, sys
from wfl import Client
def link(src, dst):
    os.kill(os.getpid(), signal.SIGKILL)  # a pool file taken and written, not linked
os.link = link
Client(sys.argv[1]).start(sys.argv[2], {"log": sys.argv[3]})
"""


def test_a_client_killed_after_taking_a_pool_file_leaves_no_run(tmp_path: Path) -> None:
    """SIGKILL of `Client.start` after it took a pool file and wrote it, before it linked it
    into place: no run, nothing listed, nothing left but a hidden temporary file; the worker
    goes on serving."""
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    log.touch()
    FileStore(directory).ensure()
    worker = WorkerProc(directory)
    try:
        wait_for(worker_listening(directory), 10.0, "the worker to listen")
        wait_for(lambda: len(pool_files(directory)) == pool.SIZE, 10.0, "the pool")
        p = subprocess.run(
            [sys.executable, "-c", CLIENT, str(directory), f"{FLOWS}:first", str(log)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == -9, p.stderr
        assert len(pool_files(directory)) == pool.SIZE - 1  # it took one
        store = FileStore(directory)
        assert store.run_ids() == []
        assert store.stray_files() == []
        assert json.loads(wfl("status", "--dir", str(directory), "--json").stdout) == []
        hidden = [n for n in os.listdir(directory) if n.endswith(".tmp")]
        assert len(hidden) == 1
        assert hidden[0].startswith(".")
        run_id = Client(directory).start(f"{FLOWS}:first", {"log": str(log)})
        wait_for(lambda: settled(directory, run_id), 10.0, "the next run to finish")
        assert Client(directory).status(run_id).result == "ran"
        assert len(log_lines(log)) == 1
    finally:
        worker.kill()
    assert "Traceback" not in worker.output()
