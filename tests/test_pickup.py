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
from typing import Any

import pickup_flows
import pytest
from crash_flows.harness import (
    WorkerProc,
    log_lines,
    serving_with_pool,
    settled,
    wait_for,
    wfl,
    worker_listening,
)

from wfl import Client, journal, pool
from wfl.errors import JournalWriteError
from wfl.store import FileStore
from wfl.worker import Worker

FLOWS = str(Path(pickup_flows.__file__))


def empty_pool(tmp_path: Path) -> tuple[FileStore, Path]:
    """A store and its pool folder, made and empty."""
    directory = tmp_path / "runs"
    store = FileStore(directory)
    store.ensure()
    folder = directory / pool.POOL
    folder.mkdir()
    return store, folder


def pool_files(directory: Path) -> dict[str, int]:
    """name -> inode of each file in the pool (not the hidden ones being made)."""
    folder = directory / pool.POOL
    names = os.listdir(folder) if folder.is_dir() else []
    return {n: os.stat(folder / n).st_ino for n in names if not n.startswith(".")}


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
    store, folder = empty_pool(tmp_path)
    directory = store.dir
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
    with serving_with_pool(directory) as worker:
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
    assert "Traceback" not in worker.output()


def test_pool_files_hold_the_header_and_starts_append_to_it(tmp_path: Path) -> None:
    """A pool file is made with the journal's header written and synced (the start's write
    then allocates no block); an empty one (an older wfl's pool) is still taken whole."""
    directory = tmp_path / "runs"
    store = FileStore(directory)
    store.ensure()
    store.refill_pool()
    folder = directory / pool.POOL
    assert {(folder / n).read_bytes() for n in pool_files(directory)} == {journal.MAGIC}
    assert [n for n in os.listdir(folder) if n.startswith(".")] == []  # none left hidden
    for name in pool_files(directory):  # as an older wfl left them
        (folder / name).write_bytes(b"")
    (folder / "header").write_bytes(journal.MAGIC)
    ids = [Client(directory).start(f"{FLOWS}:first", {}) for _ in range(pool.SIZE + 1)]
    assert os.listdir(folder) == []
    for run_id in ids:
        recs = journal.read(directory / f"{run_id}.journal").records
        assert [r["t"] for r in recs] == ["run"]


def starting_order(monkeypatch: Any, links_with_file: bool) -> list[str]:
    """What Client.start does, in order: fsyncs of the journal and its directory, the news."""
    from wfl import datagrams, linksync

    calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append("fsync dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(datagrams, "notify", lambda *a, **k: calls.append("news"))
    monkeypatch.setattr(linksync, "file_sync_covers_link", lambda dev: links_with_file)
    monkeypatch.setattr(journal, "file_sync_covers_link", lambda dev: links_with_file)
    return calls


def test_news_of_a_start_goes_out_before_its_fsync_where_that_syncs_the_name(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """On ext4/XFS (linksync.py) the journal is linked, the news sent, then the file synced
    (its name with it): one commit, and the worker prepares meanwhile. Elsewhere the file and
    then its directory are synced before the news, as POSIX asks. News goes out once."""
    directory = tmp_path / "runs"
    store = FileStore(directory)
    store.ensure()
    store.refill_pool()
    calls = starting_order(monkeypatch, True)
    Client(directory).start(f"{FLOWS}:first", {})
    assert calls == ["news", "fsync file"]
    calls.clear()
    monkeypatch.setattr(journal, "file_sync_covers_link", lambda dev: False)
    Client(directory).start(f"{FLOWS}:first", {})
    assert calls == ["fsync file", "fsync dir", "news"]


def test_a_failed_fsync_takes_the_announced_run_back(tmp_path: Path, monkeypatch: Any) -> None:
    """The news went out before the fsync: if the fsync fails, the journal is unlinked (a
    worker holding it cannot make it durable either) and start raises."""
    directory = tmp_path / "runs"
    FileStore(directory).ensure()
    starting_order(monkeypatch, True)

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    with pytest.raises(JournalWriteError, match="Input/output error"):
        Client(directory).start(f"{FLOWS}:first", {})
    assert FileStore(directory).run_ids() == []
    assert [n for n in os.listdir(directory) if n.endswith(".tmp")] == []


KILLED_AT = """
import os, signal, sys
from wfl import Client, datagrams, journal
at = sys.argv[4]
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
if at == "news":  # linked into place, its news not sent yet
    datagrams.notify = die
else:  # its news sent, the journal not synced yet
    journal.os.fsync = die
    journal.file_sync_covers_link = lambda dev: True
Client(sys.argv[1]).start(sys.argv[2], {"log": sys.argv[3]})
"""


@pytest.mark.parametrize("at", ["news", "fsync"])
def test_a_client_killed_between_link_and_fsync_leaves_a_run_driven_once(
    tmp_path: Path, at: str
) -> None:
    """SIGKILL of `Client.start` once its journal is in place: before its news went out, or
    after (before its fsync). Start never returned, but the run is whole: a worker drives it,
    its step runs once (durable with the worker's attempt record, whatever the client did)."""
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    FileStore(directory).ensure()
    worker = WorkerProc(directory)
    try:
        wait_for(worker_listening(directory), 10.0, "the worker to listen")
        p = subprocess.run(
            [sys.executable, "-c", KILLED_AT, str(directory), f"{FLOWS}:first", str(log), at],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == -9, p.stderr
        (run_id,) = FileStore(directory).run_ids()
        if at == "news":  # no news: the next worker's scan finds it
            worker.kill()
            worker = WorkerProc(directory)
        wait_for(lambda: settled(directory, run_id), 10.0, "the run to finish")
        assert Client(directory).status(run_id).result == "ran"
        assert len(log_lines(log)) == 1
        assert [n for n in os.listdir(directory) if n.endswith(".tmp")] == []
    finally:
        worker.kill()
    assert "Traceback" not in worker.output()


def test_linksync_knows_this_file_system(tmp_path: Path) -> None:
    from wfl import linksync

    dev = os.stat(tmp_path).st_dev
    with open("/proc/self/mounts") as f:
        kinds = {line.split()[2] for line in f}
    assert linksync.fs_type(dev) in kinds
    assert linksync.fs_type(os.makedev(4095, 1048575)) == ""  # no such mount
    assert linksync.file_sync_covers_link(dev) == (linksync.fs_type(dev) in {"ext4", "xfs", "ext3"})


def test_news_of_a_new_run_goes_to_its_shares_process_only(tmp_path: Path) -> None:
    """Processes of `wfl worker --processes 2` name their share in their markers: a new run's
    news wakes its owner (and listeners that name no share), not the sibling; other news
    goes to all; with the owner gone (its socket refuses) the news goes to everyone."""
    from wfl import datagrams

    directory = tmp_path / "runs"
    FileStore(directory).ensure()
    owners = {i: datagrams.listen(directory, share=(i, 2)) for i in (0, 1)}
    plain = datagrams.listen(directory)
    assert plain is not None
    ids = [f"run{k}" for k in range(20)]
    assert {datagrams.share_of(r, 2) for r in ids} == {0, 1}

    def heard() -> dict[object, list[str]]:
        out: dict[object, list[str]] = {"plain": plain[1].drain()}
        for i, opened in owners.items():
            assert opened is not None
            out[i] = opened[1].drain()
        return out

    for run_id in ids:
        datagrams.notify(directory, run_id, new=True)
        got = heard()
        assert got["plain"] == [run_id]
        assert got[datagrams.share_of(run_id, 2)] == [run_id]
        assert got[1 - datagrams.share_of(run_id, 2)] == []
        datagrams.notify(directory, run_id)  # (a cancel, an event...: everyone)
        assert heard() == {"plain": [run_id], 0: [run_id], 1: [run_id]}
    gone = owners.pop(0)
    assert gone is not None
    gone[1]._sock.close()  # died: its marker is still there, its socket is not
    run_id = next(r for r in ids if datagrams.share_of(r, 2) == 0)
    datagrams.notify(directory, run_id, new=True)
    assert plain[1].drain() == [run_id]
    assert owners[1] is not None
    assert owners[1][1].drain() == [run_id]
    assert not os.path.exists(directory / "workers" / gone[0])  # (its marker cleaned up)


def test_a_refill_drops_what_a_refill_killed_mid_way_left(tmp_path: Path) -> None:
    """A pool file is made under a hidden name and shown once its header is synced; hidden
    ones older than a minute were left by a crash and go at the next refill."""
    store, folder = empty_pool(tmp_path)
    (folder / ".old").write_bytes(b"")
    (folder / ".young").write_bytes(b"")
    os.utime(folder / ".old", (1, 1))
    assert store.refill_pool() == pool.SIZE
    assert sorted(n for n in os.listdir(folder) if n.startswith(".")) == [".young"]


def test_a_runs_load_clears_its_unloadable_note_at_most_once_per_interval(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Loading a run clears its workflow's "unloadable" note (status --why), but a process
    does so once per CLEAR_EVERY seconds per workflow (it was an unlink on every pick-up); a
    failure this process notes lifts that, so its next good load clears at once."""
    from wfl import codestate

    store = FileStore(tmp_path / "runs")
    store.ensure()
    notes = store.notes
    args = (notes, "/x/flow.py", "flow", "wf")
    now = [1000.0]
    monkeypatch.setattr(codestate.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(codestate, "_cleared", {})
    codestate.note_unloadable(*args, "SyntaxError", 1.0)
    assert codestate.unloadable(notes, "/x/flow.py", "wf") is not None
    codestate.clear_unloadable(notes, "/x/flow.py", "wf")
    assert codestate.unloadable(notes, "/x/flow.py", "wf") is None
    # another process notes it meanwhile: this one clears it again only CLEAR_EVERY later
    notes.put(codestate.UNLOADABLE, codestate._key("/x/flow.py", "wf"), {"reason": "elsewhere"})
    codestate.clear_unloadable(notes, "/x/flow.py", "wf")
    assert codestate.unloadable(notes, "/x/flow.py", "wf") is not None
    now[0] += codestate.CLEAR_EVERY + 0.1
    codestate.clear_unloadable(notes, "/x/flow.py", "wf")
    assert codestate.unloadable(notes, "/x/flow.py", "wf") is None
    codestate.note_unloadable(*args, "SyntaxError", 2.0)  # failed here: cleared at once
    codestate.clear_unloadable(notes, "/x/flow.py", "wf")
    assert codestate.unloadable(notes, "/x/flow.py", "wf") is None


def test_a_flows_module_name_is_found_again_after_a_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Client.start reuses a flow path's module name for loader.MODULE_TTL seconds (no
    symlink resolution and package search on each start), then looks again: a package made
    around the file is seen within that time, not never."""
    from wfl import loader

    folder = tmp_path / "shop"
    folder.mkdir()
    flow = folder / "orders.py"
    flow.write_text("")
    clock = [1000.0]
    monkeypatch.setattr(loader.time, "monotonic", lambda: clock[0])
    assert loader.module_name(str(flow)) == "orders"
    (folder / "__init__.py").write_text("")
    clock[0] += loader.MODULE_TTL / 2
    assert loader.module_name(str(flow)) == "orders"  # reused
    clock[0] += loader.MODULE_TTL
    assert loader.module_name(str(flow)) == "shop.orders"  # looked again


def test_a_journal_created_at_a_string_path_from_the_pool(tmp_path: Path) -> None:
    """journal.create works on string paths (a start's path: no pathlib before its news):
    it takes the pool file, links it whole under the name and leaves no temporary file."""
    store, _ = empty_pool(tmp_path)
    pool.refill(store.dir, size=1)
    (inode,) = pool_files(store.dir).values()
    path = os.path.join(store.dir, "aaaabbbbcccc.journal")
    journal.create(path, [{"t": "run", "id": "aaaabbbbcccc"}], pool=True)
    assert os.stat(path).st_ino == inode
    assert os.stat(path).st_nlink == 1
    assert journal.read(Path(path)).records == [{"t": "run", "id": "aaaabbbbcccc"}]
    assert [n for n in os.listdir(store.dir) if n.endswith(".tmp")] == []
    assert pool_files(store.dir) == {}
