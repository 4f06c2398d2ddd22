"""A worker's rescans learn which journals changed from the kernel (wfl/dirwatch.py), so 10,000
sleeping runs cost no CPU between them; whatever the kernel cannot vouch for is looked at in
full, as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wfl import Client, journal, records
from wfl.dirwatch import DirWatch, VersionWatch, updated
from wfl.store import FileStore

FLOW = str(Path(__file__).resolve().parent / "cli_flows" / "quick.py")

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify is Linux's")


def _append_elsewhere(path: Path) -> None:
    """`wfl cancel` in another process: a record appended to the journal."""
    code = (
        "import sys, time; from wfl import journal, records; "
        "journal.update(sys.argv[1], lambda _: [records.cancel(time.time())])"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=60)


def test_only_the_journals_the_kernel_names_are_looked_at(tmp_path: Path) -> None:
    client = Client(tmp_path)
    ids = [client.start(FLOW) for _ in range(3)]
    store = FileStore(tmp_path)
    watch = VersionWatch(store)
    known = watch.snapshot()
    assert set(known) == set(ids)
    assert watch.changes(known) == {}  # nothing happened: nothing to look at
    _append_elsewhere(store.journal_path(ids[1]))
    (tmp_path / "notes.txt").write_text("not a journal")
    (tmp_path / "Backup.journal").write_bytes(b"")  # no run's
    looked: list[str] = []
    real_stat = os.stat

    def counting_stat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        looked.append(os.fspath(path))  # type: ignore[arg-type]
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    os.stat = counting_stat  # type: ignore[assignment]
    try:
        changes = watch.changes(known)
    finally:
        os.stat = real_stat
    assert list(changes) == [ids[1]]
    assert looked == [str(store.journal_path(ids[1]))]
    known = updated(known, changes)
    assert known == store.versions()
    new = client.start(FLOW)
    store.journal_path(ids[0]).unlink()
    changes = watch.changes(known)
    assert changes == {new: store.versions()[new], ids[0]: None}
    known = updated(known, changes)
    assert set(known) == {ids[1], ids[2], new}
    assert watch.changes(known) == {}
    assert updated(known, {}) is known  # the idle case costs no copy


def test_an_append_that_keeps_the_mtime_is_still_a_change(tmp_path: Path) -> None:
    client = Client(tmp_path)
    run_id = client.start(FLOW)
    store = FileStore(tmp_path)
    watch = VersionWatch(store)
    known = watch.snapshot()
    path = store.journal_path(run_id)
    before = os.stat(path)
    journal.update(path, lambda _: [records.cancel(1.0)])
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same timestamp tick
    assert list(watch.changes(known)) == [run_id]


def test_lost_events_mean_a_full_look(tmp_path: Path) -> None:
    """A queue that overflowed (or a directory moved away) tells nothing: every journal is
    compared again, and watching starts anew."""
    client = Client(tmp_path)
    ids = [client.start(FLOW) for _ in range(2)]
    store = FileStore(tmp_path)
    watch = VersionWatch(store)
    known = watch.snapshot()
    assert watch.watch is not None
    old = watch.watch
    watch.watch.changed = lambda: None  # type: ignore[method-assign]  # as after IN_Q_OVERFLOW
    _append_elsewhere(store.journal_path(ids[0]))
    changes = watch.changes(known)
    assert list(changes) == [ids[0]]
    assert watch.watch is not old
    assert watch.watch.fd >= 0
    _append_elsewhere(store.journal_path(ids[1]))
    assert list(watch.changes(updated(known, changes))) == [ids[1]]


def test_the_queue_overflowing_is_seen(tmp_path: Path) -> None:
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 20_000:
        pytest.skip("the kernel queue is too long to fill here")
    watch = DirWatch(tmp_path)
    target = tmp_path / "x.journal"
    with open(target, "wb") as f:
        for _ in range(limit + 10):
            f.write(b"x")  # unbuffered below: one IN_MODIFY each
            f.flush()
            os.utime(target)  # (an IN_ATTRIB between them: the kernel cannot merge them)
    assert watch.changed() is None
    assert watch.fd < 0


def test_without_inotify_every_journal_is_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wfl import dirwatch

    def refuse(self: object, directory: object) -> None:
        raise OSError(24, "too many inotify instances")

    monkeypatch.setattr(dirwatch.DirWatch, "__init__", refuse)
    client = Client(tmp_path)
    ids = [client.start(FLOW) for _ in range(2)]
    watch = VersionWatch(FileStore(tmp_path))
    known = watch.snapshot()
    assert watch.watch is None
    _append_elsewhere(FileStore(tmp_path).journal_path(ids[1]))
    assert list(watch.changes(known)) == [ids[1]]


def test_a_forked_child_does_not_read_its_parents_queue(tmp_path: Path) -> None:
    watch = DirWatch(tmp_path)
    pid = os.fork()
    if pid == 0:  # the child: the parent's watch is not its own
        code = 0 if watch.changed() is None else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    (tmp_path / "a.journal").write_bytes(b"x")
    assert watch.changed() == {"a.journal"}


def test_a_stopped_worker_gives_its_watch_back(tmp_path: Path) -> None:
    """The kernel allows each user 128 inotify instances: a worker that ends closes its own
    rather than leaving it to a garbage collection (a test run makes hundreds of workers)."""
    from wfl.worker import Worker

    client = Client(tmp_path)
    client.start(FLOW)
    worker = Worker(tmp_path, listen=False)
    worker.run_sync(once=True)
    watch = worker._version_watch
    assert isinstance(watch, VersionWatch)
    assert watch.watch is not None
    assert watch.watch.fd < 0
