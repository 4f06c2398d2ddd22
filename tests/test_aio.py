"""Group commits synced through Linux AIO (wfl/aio.py), and the fall-back to threads."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import commit_flows
import pytest

from wfl import Client, aio, journal
from wfl.worker import Worker


def _aio_or_skip(loop: asyncio.AbstractEventLoop) -> aio.AioSync:
    sync = aio.open_aio(loop)
    if sync is None:
        pytest.skip("no AIO fsync on this system")
    return sync


def _files(tmp_path: Path, n: int) -> list[int]:
    fds = []
    for i in range(n):
        fd = os.open(tmp_path / f"f{i}", os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, b"x" * 100)
        fds.append(fd)
    return fds


def test_fsyncs_are_reported_on_the_loop_when_all_have_ended(tmp_path: Path) -> None:
    fds = _files(tmp_path, 5)

    async def main() -> list[dict[int, str]]:
        loop = asyncio.get_running_loop()
        sync = _aio_or_skip(loop)
        results: list[dict[int, str]] = []
        done = loop.create_future()

        def finished(failed: dict[int, str]) -> None:
            results.append(failed)
            if len(results) == 2:
                done.set_result(None)

        sync.submit(fds, finished)
        sync.submit(fds[:2], finished)  # a second group while the first is in flight
        await asyncio.wait_for(done, 10)
        assert sync.in_flight == 0
        sync.close()
        return results

    try:
        assert asyncio.run(main()) == [{}, {}]
    finally:
        for fd in fds:
            os.close(fd)


def test_a_group_larger_than_the_ring_waits_for_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More fsyncs than the AIO ring holds: the rest are submitted as completions make room
    (none is dropped or counted as failed)."""
    monkeypatch.setattr(aio, "DEPTH", 1)  # (the kernel rounds it up to ~100 events)
    fds = _files(tmp_path, 400)
    pushes: list[int] = []

    async def main() -> dict[int, str]:
        loop = asyncio.get_running_loop()
        sync = _aio_or_skip(loop)
        real = sync._push

        def push(todo: list[tuple[int, int]], *, first: bool = False) -> None:
            pushes.append(len(todo))
            real(todo, first=first)

        monkeypatch.setattr(sync, "_push", push)
        done: asyncio.Future[dict[int, str]] = loop.create_future()
        sync.submit(fds, done.set_result)
        try:
            return await asyncio.wait_for(done, 30)
        finally:
            sync.close()

    try:
        assert asyncio.run(main()) == {}
    finally:
        for fd in fds:
            os.close(fd)
    assert len(pushes) > 1  # the ring was full at least once


def test_a_descriptor_the_kernel_refuses_is_named_the_others_are_synced(tmp_path: Path) -> None:
    (good,) = _files(tmp_path, 1)
    bad, other = os.pipe()  # a pipe has no fsync: EINVAL at submission

    async def main() -> dict[int, str]:
        loop = asyncio.get_running_loop()
        sync = _aio_or_skip(loop)
        done: asyncio.Future[dict[int, str]] = loop.create_future()
        sync.submit([good, bad], done.set_result)
        try:
            return await asyncio.wait_for(done, 10)
        finally:
            sync.close()

    try:
        assert asyncio.run(main()) == {1: os.strerror(errno.EINVAL)}
    finally:
        for fd in (good, bad, other):
            os.close(fd)


def test_a_group_the_kernel_refuses_whole_raises(tmp_path: Path) -> None:
    fd, other = os.pipe()

    async def main() -> None:
        sync = _aio_or_skip(asyncio.get_running_loop())
        try:
            with pytest.raises(OSError, match="Invalid argument"):
                sync.submit([fd], lambda failed: None)
        finally:
            sync.close()

    try:
        asyncio.run(main())
    finally:
        os.close(fd)
        os.close(other)


def test_no_aio_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WFL_AIO", "0")

    async def main() -> None:
        assert aio.open_aio(asyncio.get_running_loop()) is None

    asyncio.run(main())


def _count_thread_syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the groups synced in threads (journal.sync_journals), as they happen."""
    threads: list[int] = []
    real_sync = journal.sync_journals

    def sync_journals(fds: list[int]) -> dict[int, str]:
        threads.append(len(fds))
        return real_sync(fds)

    monkeypatch.setattr(journal, "sync_journals", sync_journals)
    return threads


def _drive(directory: Path) -> Worker:
    commit_flows.journal_dir[:] = [str(directory)]
    worker = Worker(directory, listen=False)
    asyncio.run(worker.run(once=True))
    return worker


def test_a_worker_syncs_its_groups_through_aio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted: list[int] = []
    real = aio.AioSync.submit

    def submit(self: aio.AioSync, fds: list[int], done: aio.Done) -> None:
        submitted.append(len(fds))
        real(self, fds, done)

    monkeypatch.setattr(aio.AioSync, "submit", submit)
    threads = _count_thread_syncs(monkeypatch)
    directory = tmp_path / "runs"
    client = Client(directory)
    ids = [client.start(commit_flows.actions, {"n": 4}) for _ in range(6)]
    _drive(directory)
    assert [client.status(r).result for r in ids] == [10] * 6
    if not submitted:
        pytest.skip("no AIO fsync on this system")
    assert max(submitted) > 1  # several journals in one submission
    assert sum(threads) < sum(submitted)  # (the only live run syncs on the loop: the last ones)


def test_a_worker_syncs_in_threads_when_aio_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses an asynchronous fsync (EINVAL at submission): the group is
    synced in threads, and so is every later one."""
    refused: list[int] = []

    def submit(self: aio.AioSync, fds: list[int], done: aio.Done) -> None:
        refused.append(len(fds))
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(aio.AioSync, "submit", submit)
    threads = _count_thread_syncs(monkeypatch)
    directory = tmp_path / "runs"
    client = Client(directory)
    ids = [client.start(commit_flows.actions, {"n": 4}) for _ in range(6)]
    worker = _drive(directory)
    assert [client.status(r).result for r in ids] == [10] * 6
    assert len(refused) <= 1  # refused once, then threads for good
    assert max(threads) > 1
    assert worker.committer.aio is None
