"""The worker's durability service (wfl/commit.py): group commit across runs, the write-ahead
rule (SPEC §5), and queries, whose records ride with the next write-ahead (issue 9).

In-process tests hook journal.GroupWrite.finish to keep, per journal, the bytes that were durable
after its last sync; step bodies (tests/commit_flows.py) look at them when they run.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import commit_flows
import pytest
from crash_flows.harness import WorkerProc, log_lines, settled, state_of, wait_for

from wfl import Client, journal
from wfl.errors import JournalWriteError
from wfl.worker import Worker

FLOWS = str(Path(commit_flows.__file__))


@pytest.fixture(params=["aio", "threads"])
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """A journal directory whose syncs are watched: each sync's journals and their bytes;
    the worker syncs groups through Linux AIO (wfl/aio.py) or in threads (its fallback)."""
    if request.param == "threads":
        monkeypatch.setenv("WFL_AIO", "0")
    directory = tmp_path / "runs"
    commit_flows.durable.clear()
    commit_flows.seen.clear()
    commit_flows.journal_dir[:] = [str(directory)]
    syncs.clear()
    watch_syncs(monkeypatch)
    return directory


def watch_syncs(monkeypatch: pytest.MonkeyPatch, fail: Callable[[str], bool] | None = None) -> None:
    """Note each group's journals and the bytes they hold once synced (when the group ends,
    before its locks are released, however it was synced); `fail(path)`: that journal's sync
    is taken to have failed."""
    real = journal.GroupWrite.finish

    def finish(
        self: journal.GroupWrite,
        error: BaseException | None = None,
        *,
        failed: dict[int, str] | None = None,
    ) -> list[journal.GroupResult]:
        failed = dict(self.failed if failed is None else failed)
        paths = []
        for k, fd in enumerate(self.sync_fds()):
            path = os.readlink(f"/proc/self/fd/{fd}")
            paths.append(path)
            if fail is not None and fail(path):
                failed[k] = "Input/output error"
            elif error is None and k not in failed:
                commit_flows.durable[path] = os.pread(fd, os.fstat(fd).st_size, 0)
        if paths:
            syncs.append(paths)
        return real(self, error, failed=failed)

    monkeypatch.setattr(journal.GroupWrite, "finish", finish)


syncs: list[list[str]] = []  # the journals of each sync, in order


def drive(directory: Path, **kwargs: Any) -> Worker:
    worker = Worker(directory, listen=False, **kwargs)
    asyncio.run(worker.run(once=True))
    return worker


def test_runs_records_are_written_and_synced_together(runs: Path) -> None:
    client = Client(runs)
    ids = [client.start(commit_flows.actions, {"n": 4}) for _ in range(6)]
    drive(runs)
    assert [client.status(r).result for r in ids] == [1 + 2 + 3 + 4] * 6
    # several journals in one sync, so fewer syncs than journal writes
    assert max(len(s) for s in syncs) > 1
    assert len(syncs) < sum(len(s) for s in syncs)


def test_no_action_starts_before_its_attempt_is_durable(runs: Path) -> None:
    client = Client(runs)
    ids = [client.start(commit_flows.actions, {"n": 3}) for _ in range(5)]
    drive(runs)
    assert all(client.status(r).state == "completed" for r in ids)
    actions = [s for s in commit_flows.seen if s[0] == "action"]
    assert len(actions) == 15
    for _, n, _, durable in actions:
        assert ("att", n) in durable, f"step {n} ran before its attempt record was durable"
        assert ("sched", n) in durable


@pytest.mark.parametrize("use_async", [False, True])
def test_a_chain_of_queries_shares_one_sync_with_the_next_action(
    runs: Path, use_async: bool
) -> None:
    client = Client(runs)
    rid = client.start(commit_flows.queries_then_action, {"n": 5, "use_async": use_async})
    drive(runs)
    assert client.status(rid).result == 2 * (0 + 1 + 2 + 3 + 4) + 1
    mine = [s for s in syncs if any(p.endswith(f"{rid}.journal") for p in s)]
    # one sync carries the five queries and the action's attempt, one the result and the end
    assert len(mine) == 2
    queries = [s for s in commit_flows.seen if s[0] == "query"]
    assert len(queries) == 5
    assert all(("att", n) not in durable for _, n, _, durable in queries)
    (action,) = [s for s in commit_flows.seen if s[0] == "action"]
    _, n, _, durable = action
    # what the action acts on is durable before it starts: every query's result, in order
    assert [("done", k) for k in range(5)] == [r for r in durable if r[0] == "done"]
    assert ("att", n) in durable


def test_a_group_member_that_cannot_be_synced_is_paused_and_retried(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sync fails for one journal of a group: its records are taken back (no gap in the
    journal), the run is paused and retried; the other runs of the group go on."""
    client = Client(runs)
    ids = [client.start(commit_flows.actions, {"n": 2}) for _ in range(3)]
    failures = [ids[1]]

    def failing(path: str) -> bool:
        if failures and path.endswith(f"{failures[0]}.journal"):
            failures.clear()
            return True
        return False

    watch_syncs(monkeypatch, failing)
    events: list[str] = []
    worker = Worker(runs, listen=False, on_event=lambda e: events.append(f"{e.kind} {e.run_id}"))
    asyncio.run(worker.run(once=True))
    assert failures == []
    assert f"paused {ids[1]}" in events  # (retried in 5 s: by the next drive here)
    assert client.status(ids[0]).state == client.status(ids[2]).state == "completed"
    drive(runs)  # the retry
    assert [client.status(r).result for r in ids] == [3, 3, 3]
    for r in ids:  # every journal reads back cleanly: nothing half-kept from the failed sync
        assert journal.read(runs / f"{r}.journal").torn == 0


def test_group_write_isolates_a_failing_journal(tmp_path: Path) -> None:
    paths = [tmp_path / f"{i}.journal" for i in range(3)]
    for p in paths:
        journal.create(p, [{"t": "run", "i": str(p)}])
    writers = [journal.JournalWriter(p) for p in paths]
    for w in writers:
        w.read_all()
    journal.update(paths[2], lambda recs: [{"t": "foreign"}])  # another process appended
    writers[1].close()
    results = journal.append_group(
        [(w, journal.frame({"t": "mine", "i": i})) for i, w in enumerate(writers)]
    )
    assert results[0] == []
    assert isinstance(results[1], JournalWriteError)
    assert results[2] == [{"t": "foreign"}]
    assert [r["t"] for r in journal.read(paths[0]).records] == ["run", "mine"]
    assert [r["t"] for r in journal.read(paths[2]).records] == ["run", "foreign", "mine"]


def test_several_journals_are_fsynced_in_parallel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(Without AIO) each journal of a group gets its own fsync, concurrently in threads
    (ext4 batches them into one commit); a journal that cannot be synced is named, the others
    are still synced."""
    import threading

    inside: list[int] = []
    both = threading.Barrier(2, timeout=10)  # passes only if two fsyncs are in flight at once
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        inside.append(fd)
        both.wait()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fds = [os.open(tmp_path / f"f{i}", os.O_RDWR | os.O_CREAT, 0o600) for i in range(2)]
    try:
        assert journal.sync_journals(fds) == {}
        assert sorted(inside) == sorted(fds)
        monkeypatch.setattr(os, "fsync", real_fsync)
        os.close(fds[1])  # (a closed descriptor: EBADF)
        assert set(journal.sync_journals(fds)) == {1}
    finally:
        os.close(fds[0])


def test_queries_crash_safety_sigkill(tmp_path: Path) -> None:
    """SIGKILL while a query of a chain runs (its records, and its predecessor's, not durable
    yet), then while the action that uses their answers runs. The queries run again after the
    first kill (with new answers); the action's two attempts see the same answers, the ones
    the journal holds: they were durable before the action first started."""
    directory = tmp_path / "runs"
    log, qgate, agate = tmp_path / "log", tmp_path / "qgate", tmp_path / "agate"
    qgate.touch()
    agate.touch()
    rid = Client(directory).start(
        f"{FLOWS}:chain", {"log": str(log), "query_gate": str(qgate), "action_gate": str(agate)}
    )

    def lines(kind: str) -> list[list[str]]:
        return [ln.split() for ln in log_lines(log) if ln.startswith(kind)]

    w = WorkerProc(directory)
    try:
        wait_for(lambda: len(lines("query")) == 2, 20, "the second query to run")
        w.kill()
        qgate.unlink()
        w = WorkerProc(directory)
        wait_for(lambda: len(lines("action")) == 1, 20, "the action to start")
        w.kill()
        agate.unlink()
        w = WorkerProc(directory)
        wait_for(lambda: settled(directory, rid), 20, "the run to end")
    finally:
        w.kill()
    st = state_of(directory, rid)
    assert st.end is not None, w.output()
    assert st.end["kind"] == "success"
    queries = lines("query")
    assert [q[1] for q in queries] == ["0", "1", "0", "1"]  # ran again after the first kill
    answers = [st.steps[0].result, st.steps[1].result]
    assert answers == [queries[2][3], queries[3][3]]  # the journal holds the second answers
    actions = lines("action")
    assert [(a[1], a[2]) for a in actions] == [("2", "1"), ("2", "2")]
    assert actions[0][3] == actions[1][3] == ",".join(answers)
    assert st.steps[2].attempts == 2  # every execution of the action is a recorded attempt


def test_a_run_keeps_its_slot_for_its_next_step(runs: Path) -> None:
    """One slot, three runs: a run's next step takes over the slot its previous step leaves
    (its attempt record then goes in the same write and sync as that step's result), for
    SLOT_CHAIN steps in a row at most."""
    commit_flows.order.clear()
    client = Client(runs)
    ids = [client.start(commit_flows.steps_in_turn, {"label": x, "n": 6}) for x in "abc"]
    drive(runs)
    assert [client.status(r).result for r in ids] == [6, 6, 6]
    labels = "".join(label for label, _ in commit_flows.order)
    assert sum(x != y for x, y in itertools.pairwise(labels)) == 2  # run by run
    for r in ids:
        mine = [s for s in syncs if any(p.endswith(f"{r}.journal") for p in s)]
        # its first schedule (written while it waited), each attempt with the result before
        # it, the last result with the end: 6 + 2, where a slot taken anew costs one more
        assert len(mine) <= 8, (r, len(mine))


def test_a_run_gives_its_slot_up_after_a_chain(runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wfl import slots

    monkeypatch.setattr(slots, "SLOT_CHAIN", 2)
    commit_flows.order.clear()
    client = Client(runs)
    for x in "ab":
        client.start(commit_flows.steps_in_turn, {"label": x, "n": 6})
    drive(runs)
    labels = "".join(label for label, _ in commit_flows.order)
    assert "aaaa" not in labels
    assert "bbbb" not in labels
    assert sorted(labels) == list("aaaaaabbbbbb")


def test_a_short_sync_step_runs_on_the_loop_after_a_few_runs_in_threads(runs: Path) -> None:
    from wfl import hops

    commit_flows.threads.clear()
    client = Client(runs)
    n = hops.SHORT_RUNS + 10
    rid = client.start(commit_flows.many, {"n": n, "slow_at": hops.SHORT_RUNS + 3})
    drive(runs)
    assert client.status(rid).result == n
    names = [name for _, name in commit_flows.threads]
    assert all(x.startswith("wfl-step") for x in names[: hops.SHORT_RUNS])
    loop_thread = names[hops.SHORT_RUNS]
    assert not loop_thread.startswith("wfl-step")  # inline from then on ...
    assert names[hops.SHORT_RUNS + 3] == loop_thread
    # ... until one run was slow: back to threads (the last call, asyncio.run inside, too)
    assert all(x.startswith("wfl-step") for x in names[hops.SHORT_RUNS + 4 :])


def test_a_sync_step_with_a_timeout_always_runs_in_a_thread(runs: Path) -> None:
    from wfl import hops

    commit_flows.threads.clear()
    client = Client(runs)
    rid = client.start(commit_flows.many, {"n": hops.SHORT_RUNS + 4, "timeout": 5.0})
    drive(runs)
    assert client.status(rid).state == "completed"
    assert all(name.startswith("wfl-step") for _, name in commit_flows.threads)


def test_hops_bookkeeping() -> None:
    from wfl import hops

    h = hops.Hops()

    def f() -> None: ...

    for _ in range(hops.SHORT_RUNS - 1):
        h.ran(f, 0.00001, inline=False)
    assert not h.inline(f)
    h.ran(f, 0.01, inline=False)  # one long run starts the count again
    assert not h.inline(f)
    for _ in range(hops.SHORT_RUNS):
        h.ran(f, 0.00001, inline=False)
    assert h.inline(f)
    for _ in range(hops.MAX_DEMOTIONS):
        h.ran(f, 0.01, inline=True)
        assert not h.inline(f)
        for _ in range(hops.SHORT_RUNS):
            h.ran(f, 0.00001, inline=False)
    assert not h.inline(f)  # demoted too often: threads for good


def test_a_steps_result_waits_for_the_next_attempt_of_its_run(
    runs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six runs, four slots, groups back to back: a run that keeps its slot for its next
    step holds its last result back from the groups of others, so the result, the next
    schedule and the next attempt go in one write (and one fsync), never the result alone."""
    batches: list[str] = []
    real = journal.GroupWrite.__init__

    def watched(self: journal.GroupWrite, items: Sequence[tuple[Any, bytes]]) -> None:
        for _, payload in items:
            recs = journal.parse(payload, start=0, path="batch").records
            batches.append("+".join(r["t"] for r in recs))
        real(self, items)

    monkeypatch.setattr(journal.GroupWrite, "__init__", watched)
    client = Client(runs)
    ids = [client.start(commit_flows.actions, {"n": 5}) for _ in range(6)]
    drive(runs)
    assert [client.status(r).result for r in ids] == [15] * 6
    assert batches.count("done+sched+att") == 6 * 4
    assert batches.count("done+end") == 6
    assert "done+sched" not in batches
    assert batches.count("att") <= 6  # a first step, after waiting for a slot
