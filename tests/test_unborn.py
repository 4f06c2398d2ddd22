"""Journals that hold no record (wfl/unborn.py): a start cut short by a crash between the
link of its journal (a pool file holding the header) and the write of its run record. They
are no runs: not listed, counted, reported or driven; a worker (or `wfl cleanup --finished`)
removes them once nothing touched them for unborn.GRACE seconds, never sooner. Journals
broken otherwise stay reported and kept."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pickup_flows
import pytest
from crash_flows.harness import log_lines, serving_with_pool, settled, wait_for, wfl

from wfl import Client, journal, unborn
from wfl.clock import FakeClock
from wfl.errors import RunNotFound
from wfl.store import FileStore
from wfl.worker import Worker

FLOWS = str(Path(pickup_flows.__file__))
FIRST = f"{FLOWS}:first"
GHOST = "0123456789ab"  # the id of the start that was cut short

RUN_RECORD = journal.frame({"t": "run", "id": GHOST, "workflow": "first"})
# what a crash can leave of a start (wfl/unborn.py), and of an older wfl's creation
CUT_SHORT = {
    "header": journal.MAGIC,
    "torn-record": journal.MAGIC + RUN_RECORD[: len(RUN_RECORD) // 2],
    "zeros": journal.MAGIC + b"\0" * 64,  # the size made durable, the data not
    "empty": b"",
    "cut-header": journal.MAGIC[:5],
}


def directory_with(tmp_path: Path, content: bytes) -> tuple[Client, str, Path]:
    """A directory with one finished run and the journal of a start cut short."""
    directory = tmp_path / "runs"
    client = Client(directory)
    run_id = client.start(FIRST, {})
    asyncio.run(Worker(directory, listen=False).run(once=True))
    ghost = directory / f"{GHOST}.journal"
    ghost.write_bytes(content)
    os.chmod(ghost, 0o600)
    return client, run_id, ghost


def cli(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return wfl(*args, "--dir", str(directory), check=False)


def unchanged(path: Path) -> tuple[bytes, int, int]:
    st = os.stat(path)
    return path.read_bytes(), st.st_mtime_ns, st.st_ctime_ns


@pytest.mark.parametrize("kind", sorted(CUT_SHORT))
def test_a_start_cut_short_is_no_run_to_any_command(tmp_path: Path, kind: str) -> None:
    client, run_id, ghost = directory_with(tmp_path, CUT_SHORT[kind])
    directory = client.store.dir
    before = unchanged(ghost)
    assert [s.id for s in client.list()] == [run_id]
    assert [s.id for s in client.list(state="failed")] == []
    listed = json.loads(cli(directory, "status", "--json").stdout)
    assert [r["id"] for r in listed] == [run_id]
    table = cli(directory, "status")
    assert table.returncode == 0
    assert GHOST not in table.stdout
    assert "broken" not in table.stdout.lower()
    assert run_id in table.stdout
    with pytest.raises(RunNotFound):
        client.status(GHOST)
    for args in (
        ("status", GHOST),
        ("status", GHOST, "--why"),
        ("status", GHOST, "--json"),
        ("show", GHOST),
        ("cancel", GHOST),
        ("send-event", GHOST, "x"),
        ("restart", GHOST),
        ("cleanup", GHOST),
    ):
        r = cli(directory, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip() == f"wfl: error: {RunNotFound(GHOST)}"
    check = cli(directory, "check", FLOWS)
    assert check.returncode == 0, check.stdout + check.stderr
    assert GHOST not in check.stdout
    assert unchanged(ghost) == before  # nothing repaired, cut, appended or removed


def test_status_counts_no_start_cut_short(tmp_path: Path) -> None:
    """The "N more" of `wfl status --limit` counts runs only; the index never holds the
    journal (always read again: it may become a run) and is not rewritten for it."""
    from wfl import index

    client, _, _ = directory_with(tmp_path, journal.MAGIC)
    second = client.start(FIRST, {})
    found, total = index.survey(client.store, state=None, workflow=None, limit=1,
                                on_stray=lambda names: None)  # fmt: skip
    assert [s.id for s in found] == [second]
    assert total == 2
    saved = client.store.dir / "index"
    stamp = os.stat(saved).st_mtime_ns
    for newest in (1, None):
        assert GHOST not in [s.id for s in client.store.summaries(newest=newest)]
    assert os.stat(saved).st_mtime_ns == stamp


def test_an_abbreviated_id_is_not_ambiguous_because_of_one(tmp_path: Path) -> None:
    client, run_id, _ = directory_with(tmp_path, b"")
    twin = run_id[:4] + "zzzzzzzz"
    (client.store.dir / f"{twin}.journal").write_bytes(journal.MAGIC)
    assert client.resolve(run_id[:4]) == run_id
    assert client.status(run_id[:4]).id == run_id


BROKEN = {
    "bad-record-then-good": journal.MAGIC + b"\x00\x00\x00\x05garbage!" + RUN_RECORD,
    "first-record-not-the-run": journal.MAGIC + journal.frame({"t": "evt", "name": "x"}),
    "not-a-journal": b"just some text someone saved here",
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_journal_stays_reported_and_kept(tmp_path: Path, kind: str) -> None:
    """Journals that hold data are not starts cut short: reported as before (a failed run),
    never removed by a worker however old; `wfl cleanup --finished` deletes them as failed
    runs, as before (and says so in its count)."""
    client, run_id, ghost = directory_with(tmp_path, BROKEN[kind])
    st = client.status(GHOST)
    assert st.state == "failed"
    assert "JournalCorrupt" in st.error
    assert {s.id for s in client.list()} == {run_id, GHOST}
    later = FakeClock(time.time() + 10 * unborn.GRACE)
    worker = Worker(client.store.dir, listen=False, clock=later)
    worker.run_sync(once=True)
    assert GHOST in worker.broken
    assert unborn.remove_if_stale(ghost, later.now()) == (False, None)
    assert ghost.read_bytes() == BROKEN[kind]
    assert sorted(Client(client.store.dir, clock=later).cleanup_finished()) == sorted(
        [run_id, GHOST]
    )


def ctime(path: Path) -> float:
    st = os.stat(path)
    return max(st.st_mtime, st.st_ctime)


def test_a_worker_removes_one_after_the_grace_period_never_sooner(
    tmp_path: Path, caplog: Any
) -> None:
    """The age is the inode's change time (link and rename move it, a pool file's mtime is
    when a worker made it): a worker whose clock is just short of GRACE past it keeps the
    file, and does not lease, drive or report it; just past it, the file is removed."""
    client, run_id, ghost = directory_with(tmp_path, journal.MAGIC)
    os.utime(ghost, (1, 1))  # an old mtime (a pool file's) does not make it old
    born = ctime(ghost)
    assert born > time.time() - 30
    events: list[Any] = []
    early = Worker(client.store.dir, listen=False, clock=FakeClock(born + unborn.GRACE - 0.01),
                   on_event=events.append)  # fmt: skip
    early.run_sync(once=True)
    assert ghost.exists()
    assert GHOST not in early.broken
    assert GHOST not in early.drivers
    assert GHOST not in early.waits
    assert [e for e in events if e.run_id == GHOST] == []
    assert not client.store.is_leased(GHOST)
    assert GHOST in early._waking  # looked at again once it is old enough
    assert early._waking[GHOST].when == pytest.approx(born + unborn.GRACE)
    late = Worker(client.store.dir, listen=False, clock=FakeClock(born + unborn.GRACE + 0.01))
    with caplog.at_level("INFO"):
        late.run_sync(once=True)
    assert not ghost.exists()
    assert "holds no record" in caplog.text
    assert [s.id for s in client.list()] == [run_id]  # the run itself untouched


def test_a_running_worker_removes_one_when_its_grace_period_ends(tmp_path: Path) -> None:
    """A worker that sees the journal young (a rescan, news) looks again when it is old
    enough, without a rescan: its timer."""
    directory = tmp_path / "runs"
    FileStore(directory).ensure()
    clock = FakeClock(time.time())
    worker = Worker(directory, listen=False, clock=clock)
    ghost = directory / f"{GHOST}.journal"

    async def main() -> None:
        made: list[bool] = []
        task = asyncio.create_task(worker.run(until=lambda: bool(made) and not ghost.exists()))
        await asyncio.sleep(0.05)
        ghost.write_bytes(journal.MAGIC)
        made.append(True)
        worker.rescan()
        assert ghost.exists()
        assert GHOST in worker._waking
        clock.advance(unborn.GRACE / 2)
        worker.activity()
        await asyncio.sleep(0.05)
        assert ghost.exists()
        clock.advance(unborn.GRACE / 2 + 1)
        worker.activity()
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert not ghost.exists()


def test_removal_leaves_a_journal_that_got_its_record_alone(tmp_path: Path) -> None:
    _, _, ghost = directory_with(tmp_path, journal.MAGIC)
    with open(ghost, "ab") as f:
        f.write(RUN_RECORD)
    later = time.time() + 10 * unborn.GRACE
    assert unborn.remove_if_stale(ghost, later) == (False, None)
    assert ghost.read_bytes() == journal.MAGIC + RUN_RECORD
    assert unborn.remove_if_stale(tmp_path / "none.journal", later) == (False, None)


def test_cleanup_finished_removes_old_ones_not_young_ones(tmp_path: Path) -> None:
    client, run_id, ghost = directory_with(tmp_path, journal.MAGIC)
    born = ctime(ghost)
    young = Client(client.store.dir, clock=FakeClock(born + unborn.GRACE - 0.01))
    assert young.cleanup_finished(older_than=None) == [run_id]  # the run: not the ghost
    assert ghost.exists()
    # --older-than keeps them as long as the runs it keeps
    week = 7 * 86400.0
    old = Client(client.store.dir, clock=FakeClock(born + 2 * unborn.GRACE))
    assert old.cleanup_finished(older_than=week) == []
    assert ghost.exists()
    assert old.cleanup_finished(older_than=None) == []
    assert not ghost.exists()


def test_cleanup_command_keeps_young_ones(tmp_path: Path) -> None:
    client, _, ghost = directory_with(tmp_path, journal.MAGIC)
    r = cli(client.store.dir, "cleanup", "--finished")
    assert r.stdout == "deleted 1 run\n"  # the run; the ghost is young: kept
    assert ghost.exists()


def test_a_key_that_names_a_start_cut_short_is_stale(tmp_path: Path) -> None:
    """A keyed start links its key after its journal is synced, so a key naming a journal
    without its record is what a crash left: starting again with the key makes a new run
    (and returns its id, which exists), as if the key were free."""
    directory = tmp_path / "runs"
    store = FileStore(directory)
    store.ensure()
    (directory / f"{GHOST}.journal").write_bytes(journal.MAGIC)
    key_file = store.key_path("order-42")
    key_file.write_bytes(journal.encode({"key": "order-42", "run": GHOST}))
    assert store.run_for_key("order-42") is None
    client = Client(directory)
    run_id = client.start(FIRST, {}, key="order-42")
    assert run_id != GHOST
    assert client.status(run_id).key == "order-42"
    assert store.key_owner("order-42") == run_id
    assert client.start(FIRST, {}, key="order-42") == run_id  # the key holds now
    r = subprocess.run(
        [*wfl_cmd(), "start", FIRST, "--key", "order-42", "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (r.returncode, r.stdout.strip()) == (0, run_id)
    # the same for a key whose journal is still pending under keys/
    pending = directory / "keys" / "abcdefabcdef.pending"
    pending.write_bytes(journal.MAGIC)
    store.key_path("order-43").write_bytes(
        journal.encode({"key": "order-43", "run": "abcdefabcdef"})
    )
    other = client.start(FIRST, {}, key="order-43")
    assert other != "abcdefabcdef"
    assert client.status(other).key == "order-43"
    assert [s.id for s in client.list()].count("abcdefabcdef") == 0


def wfl_cmd() -> list[str]:
    from crash_flows.harness import wfl_command

    return wfl_command()


def test_a_child_created_again_replaces_its_cut_short_journal(tmp_path: Path) -> None:
    """A run created by id (a child: its parent's driver creates it again on replay) whose
    first creation a crash cut short is written whole, not taken for a run that exists."""
    directory = tmp_path / "runs"
    store = FileStore(directory)
    store.ensure()
    ghost = directory / f"{GHOST}.journal"
    ghost.write_bytes(journal.MAGIC)
    record = {"t": "run", "id": GHOST, "workflow": "first"}
    assert store.create_run(lambda _id: [record], run_id=GHOST) == GHOST
    assert journal.read(ghost).records == [record]
    assert store.create_run(lambda _id: [{"t": "run", "id": "other"}], run_id=GHOST) == GHOST
    assert journal.read(ghost).records == [record]  # a run that exists is left as it is
    assert [n for n in os.listdir(directory) if n.endswith(".tmp")] == []


KILLED = """
import os, signal, sys
from wfl import Client, journal
def lost(fd, data, path, verb="append to"):
    pass  # the records' write never reaches the disk (the machine crashed before its fsync)
journal._write_all = lost
def die(fd):
    os.kill(os.getpid(), signal.SIGKILL)  # ... and the machine goes down before the fsync
journal.os.fsync = die
journal.file_sync_covers_link = lambda dev: True
Client(sys.argv[1]).start(sys.argv[2], {"log": sys.argv[3]})
"""


def test_a_start_killed_after_its_link_before_its_record_leaves_no_run(tmp_path: Path) -> None:
    """SIGKILL of a real `Client.start` once its journal (a pool file: the header) is linked
    and its news sent, its record not written: what a machine crash in that window leaves.
    A live worker hears of it, drives nothing, reports nothing; no listing shows it; the
    next start runs; a worker removes it once the grace period is over."""
    directory = tmp_path / "runs"
    log = tmp_path / "effects.log"
    log.touch()
    with serving_with_pool(directory) as worker:
        p = subprocess.run(
            [sys.executable, "-c", KILLED, str(directory), FIRST, str(log)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert p.returncode == -9, p.stderr
        (ghost_id,) = FileStore(directory).run_ids()
        ghost = directory / f"{ghost_id}.journal"
        assert ghost.read_bytes() == journal.MAGIC  # the crash's file, exactly
        run_id = Client(directory).start(FIRST, {"log": str(log)})
        wait_for(lambda: settled(directory, run_id), 10.0, "the next run to finish")
        assert len(log_lines(log)) == 1
        listed = json.loads(wfl("status", "--dir", str(directory), "--json").stdout)
        assert [r["id"] for r in listed] == [run_id]
        assert ghost.exists()  # young: left alone
    out = worker.output()
    assert "Traceback" not in out
    assert ghost_id not in out  # not reported (broken, loaded...) by the worker
    later = FakeClock(ctime(ghost) + unborn.GRACE + 1)
    Worker(directory, listen=False, clock=later).run_sync(once=True)
    assert not ghost.exists()
    assert FileStore(directory).run_ids() == [run_id]


def test_a_journal_read_by_a_worker_is_not_repaired(tmp_path: Path) -> None:
    """A run's writer refuses a journal without a record before anything is written to it
    (an older wfl's writer "repaired" a cut header: the file changed under its creator)."""
    client, _, ghost = directory_with(tmp_path, journal.MAGIC[:3])
    before = unchanged(ghost)
    with pytest.raises(RunNotFound):
        client.store.writer(GHOST).read_all()
    with pytest.raises(RunNotFound):
        client.store.update(GHOST, lambda records: [{"t": "evt"}])
    assert unchanged(ghost) == before


def test_removal_never_waits_for_a_journal_someone_holds(tmp_path: Path) -> None:
    """A worker's loop asks: a journal locked by a writer is looked at again a second later."""
    import fcntl

    _, _, ghost = directory_with(tmp_path, journal.MAGIC)
    later = time.time() + 10 * unborn.GRACE
    with open(ghost, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert unborn.remove_if_stale(ghost, later) == (False, later + 1.0)
    assert ghost.exists()
    assert unborn.remove_if_stale(ghost, later) == (True, None)
    assert not ghost.exists()


def test_the_web_view_shows_no_start_cut_short(tmp_path: Path) -> None:
    from uiserver import UiServer

    client, run_id, _ = directory_with(tmp_path, journal.MAGIC)
    server = UiServer(client.store.dir)
    try:
        page = server.request("GET", "/api/runs").json()
        assert [r["id"] for r in page["runs"]] == [run_id]
        assert page["total"] == 1
        assert page["counts"] == {"in_progress": 0, "completed": 1, "failed": 0, "canceled": 0}
        assert server.request("GET", f"/api/runs/{GHOST}").status == 404  # as an unknown id
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("size", [10, 5000, 100_000])
def test_a_run_is_told_from_a_start_cut_short_by_its_first_record(
    tmp_path: Path, size: int
) -> None:
    """unborn.started reads the first frame only (a run record of any size), and the whole
    file when that is not whole (torn, or bad and followed by good ones: broken)."""
    path = tmp_path / "x.journal"
    first = journal.frame({"t": "run", "id": GHOST, "args": {"blob": "x" * size}})
    path.write_bytes(journal.MAGIC + first)
    assert unborn.started(path) is True
    path.write_bytes(journal.MAGIC + first[:-1])
    assert unborn.started(path) is False
    path.write_bytes(journal.MAGIC + first[:-1] + b"!" + RUN_RECORD)
    assert unborn.started(path) is True  # corruption: broken, not cut short
    assert unborn.started(tmp_path / "none.journal") is None


def test_worker_processes_pass_over_one(tmp_path: Path) -> None:
    """`wfl worker --processes 2 --once` (a sibling's run is looked at through its share's
    path): the journal is neither reported nor removed (young), and the run still runs."""
    client, _, ghost = directory_with(tmp_path, journal.MAGIC)
    run_id = client.start(FIRST, {})
    r = cli(client.store.dir, "worker", "--processes", "2", "--once")
    assert r.returncode == 0, r.stderr
    assert GHOST not in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert ghost.read_bytes() == journal.MAGIC
    assert client.status(run_id).state == "completed"
