"""`wfl worker --processes N`: one worker, N processes (a supervisor and its children).

The children share the store's leases, so a run is driven by one of them at a time and no
completed step runs again; each prefers its share of the runs (by hash) and takes a sibling's
after a delay. The supervisor forwards SIGTERM/SIGINT, restarts a child that dies, drains
everything with --once, and shows the whole worker (tests/cli_flows/shares.py,
tests/crash_flows/chaos.py)."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from crash_flows.harness import (
    CHAOS,
    account,
    journals,
    line_count,
    log_lines,
    settled,
    store_at,
    wait_for,
    wfl_command,
    worker_listening,
)

from wfl import Client
from wfl.clock import FakeClock

SHARES = str(Path(__file__).resolve().parent / "cli_flows" / "shares.py")
WIDE = str(Path(__file__).resolve().parent / "cli_flows" / "wide_steps.py")


def children_of(pid: int) -> list[int]:
    """The live child processes of `pid` (from /proc: every process's parent pid)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Supervisor:
    """`wfl worker --processes N --store STORE` with its output in files."""

    def __init__(self, store: str, tmp: Path, *extra: str, processes: int = 2) -> None:
        self.out = tmp / "worker.out"
        self.err = tmp / "worker.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [*wfl_command(), "worker", "--processes", str(processes), "--store", store,
                 *extra],
                stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip
        self.store = store

    def stderr(self) -> str:
        return self.err.read_text()

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill_all(self) -> None:
        """Cleanup after a failed test: the supervisor's children first, then it."""
        for child in children_of(self.proc.pid):
            os.kill(child, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_settled(where: str, ids: list[str], timeout: float) -> None:
    left = set(ids)

    def check() -> bool:
        for run_id in list(left):
            if settled(where, run_id):
                left.discard(run_id)
        return not left

    wait_for(check, timeout, f"{len(left)} runs to end", every=0.05)


def attempts_per_step(where: str) -> Counter[tuple[str, int]]:
    counts: Counter[tuple[str, int]] = Counter()
    for run_id, records in journals(where).items():
        for r in records:
            if r["t"] == "att":
                counts[(run_id, int(r["n"]))] += 1
    return counts


# -- the option ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_processes_must_be_a_positive_integer(tmp_path: Path, value: str) -> None:
    done = subprocess.run(
        [*wfl_command(), "worker", "--processes", value, "--dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--processes" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing was started


# -- sharing the work ------------------------------------------------------------------------


def test_a_process_takes_its_share_at_once_and_a_siblings_runs_later(tmp_path: Path) -> None:
    from wfl.share import SHARE_DELAY, ShareWorker, share_of

    client = Client(tmp_path)
    ids = [client.start(f"{SHARES}:pids", {"n": 1}) for _ in range(40)]
    clock = FakeClock(time.time() + 3600)  # an hour after they were created: long due
    worker = ShareWorker(tmp_path, index=1, count=2, listen=False, clock=clock)
    worker.scan()
    shares = Counter(share_of(r, 2) for r in ids)
    assert min(shares.values()) > 5  # (the hash splits them)
    for run_id in ids:
        when = worker._waking[run_id].when
        if share_of(run_id, 2) == 1:
            assert when <= clock.now()
        else:  # not before SHARE_DELAY from now, however long it has been due
            assert when >= clock.now() + SHARE_DELAY


def test_two_processes_drive_200_runs_each_step_once(store_spec: str, tmp_path: Path) -> None:
    worker = Supervisor(store_spec, tmp_path)
    try:
        wait_for(worker_listening(store_spec, 2), 30.0, "two worker processes to listen")
        client = Client(store=store_spec)
        ids = [client.start(f"{SHARES}:pids", {"n": 3}) for _ in range(200)]
        wait_settled(store_spec, ids, 120.0)
        children = children_of(worker.proc.pid)
        assert worker.stop() == 0
    finally:
        worker.kill_all()
    executed_by: set[int] = set()
    for run_id in ids:
        st = client.status(run_id)
        assert st.state == "completed", (run_id, st.error)
        executed_by.update(st.result)
    # both processes took part, and only they (not the supervisor)
    assert executed_by == set(children), (executed_by, children)
    counts = attempts_per_step(store_spec)
    assert len(counts) == 600
    assert set(counts.values()) == {1}  # no step executed twice
    assert "restart" not in worker.stderr()


def test_a_killed_child_is_restarted_and_its_runs_finish(store_spec: str, tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    worker = Supervisor(store_spec, tmp_path)
    try:
        wait_for(worker_listening(store_spec, 2), 30.0, "two worker processes to listen")
        client = Client(store=store_spec)
        ids = [client.start(f"{CHAOS}:five", {"log": str(log), "retry": True}) for _ in range(40)]
        wait_for(lambda: line_count(log) >= 30, 60.0, "steps to execute")
        victim = children_of(worker.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)  # mid-step: five's steps pause around their effect
        wait_settled(store_spec, ids, 120.0)
        wait_for(lambda: len(children_of(worker.proc.pid)) == 2, 30.0, "the restarted child")
        assert victim not in children_of(worker.proc.pid)
        assert worker.proc.poll() is None  # the supervisor lives on
        assert worker.stop() == 0
    finally:
        worker.kill_all()
    acc = account(store_spec, log, ids)
    assert acc.problems == [], acc.problems[:5]
    assert acc.runs == 40
    assert all(Client(store=store_spec).status(r).state == "completed" for r in ids)
    lines = [ln for ln in worker.stderr().splitlines() if str(victim) in ln]
    assert len(lines) == 1, worker.stderr()
    assert "restarting it" in lines[0]


def test_sigterm_lets_running_steps_finish_and_leaves_no_process(
    store_spec: str, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    worker = Supervisor(store_spec, tmp_path)
    try:
        wait_for(worker_listening(store_spec, 2), 30.0, "two worker processes to listen")
        children = children_of(worker.proc.pid)
        assert len(children) == 2
        client = Client(store=store_spec)
        run_id = client.start(f"{CHAOS}:lingering", {"log": str(log), "seconds": 1.0})
        wait_for(lambda: line_count(log) >= 1, 30.0, "the slow step to begin")
        assert worker.stop() == 0
    finally:
        worker.kill_all()
    assert [ln.split()[-1] for ln in log_lines(log)] == ["begin", "end"]  # it finished
    assert not any(alive(pid) for pid in children)
    st = client.status(run_id)
    assert st.state == "in_progress"  # its next step was not started: the worker stopped
    assert [s.state for s in st.steps][:1] == ["done"]


def test_ctrl_c_stops_the_whole_worker(tmp_path: Path) -> None:
    where = str(tmp_path / "runs")
    worker = Supervisor(where, tmp_path)
    try:
        wait_for(worker_listening(where, 2), 30.0, "two worker processes to listen")
        children = children_of(worker.proc.pid)
        worker.proc.send_signal(signal.SIGINT)  # forwarded as SIGTERM: each stops cleanly
        assert worker.proc.wait(30) == 0
    finally:
        worker.kill_all()
    assert not any(alive(pid) for pid in children)
    assert worker.stderr() == ""


def test_sigkill_of_the_supervisor_stops_its_children(tmp_path: Path) -> None:
    where = str(tmp_path / "runs")
    worker = Supervisor(where, tmp_path)
    try:
        wait_for(worker_listening(where, 2), 30.0, "two worker processes to listen")
        children = children_of(worker.proc.pid)
        worker.proc.kill()
        worker.proc.wait()
        wait_for(lambda: not any(alive(p) for p in children), 30.0, "the children to exit")
    finally:
        for pid in children_of(worker.proc.pid):
            os.kill(pid, signal.SIGKILL)


# -- --once ----------------------------------------------------------------------------------


def test_once_drains_everything(store_spec: str, tmp_path: Path) -> None:
    client = Client(store=store_spec)
    ids = [client.start(f"{SHARES}:pids", {"n": 2}) for _ in range(30)]
    ids += [client.start(f"{SHARES}:family", {"children": 4}) for _ in range(4)]
    ids += [client.start(f"{SHARES}:chain", {"left": 3}) for _ in range(4)]
    done = subprocess.run(
        [*wfl_command(), "worker", "--once", "--processes", "2", "--store", store_spec],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    left = [s.id for s in client.list() if s.state != "completed"]
    assert left == []
    assert len(client.list()) == 30 + 4 * 5 + 4 * 4  # children and continued runs included
    assert set(attempts_per_step(store_spec).values()) == {1}
    assert done.stdout.count("run_finished success") == 30 + 4 * 5 + 4 * 4


def test_the_worker_processes_do_not_load_the_cli_framework(tmp_path: Path) -> None:
    # typer brings pydantic and rich (~25 MB in each long-lived process of the tree):
    # PYTHONVERBOSE makes the supervisor and its children name every module they import.
    client = Client(tmp_path / "runs")
    ids = [client.start(f"{SHARES}:pids", {"n": 2}) for _ in range(4)]
    done = subprocess.run(
        [*wfl_command(), "worker", "--once", "--processes", "2", "--dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONVERBOSE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run_finished success") == len(ids)
    imported = [line for line in done.stderr.splitlines() if line.startswith("# ")]
    assert any("/wfl/processes" in line for line in imported)  # (the check can see imports)
    assert any("/wfl/share" in line for line in imported)  # (and the children's)
    heavy = [line for line in imported if re.search(r"/(typer|pydantic|click)/", line)]
    assert heavy == []


def test_once_exits_when_a_run_is_held_elsewhere(store_spec: str, tmp_path: Path) -> None:
    client = Client(store=store_spec)
    ids = [client.start(f"{SHARES}:pids", {"n": 1}) for _ in range(10)]
    lease = store_at(store_spec).try_lease(ids[0])  # another worker drives this one
    assert lease is not None
    try:
        done = subprocess.run(
            [*wfl_command(), "worker", "--once", "--processes", "2", "--store", store_spec],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        lease.release()
    assert done.returncode == 0, done.stderr
    assert client.status(ids[0]).state == "in_progress"
    assert all(client.status(r).state == "completed" for r in ids[1:])


def test_once_fails_with_one_line_when_the_store_is_unreachable(tmp_path: Path) -> None:
    done = subprocess.run(
        [*wfl_command(), "worker", "--once", "--processes", "2",
         "--store", "postgresql://nobody@127.0.0.1:9/nothing?connect_timeout=2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    single = subprocess.run(
        [*wfl_command(), "worker", "--once", "--processes", "1",
         "--store", "postgresql://nobody@127.0.0.1:9/nothing?connect_timeout=2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert single.returncode != 0
    assert done.returncode == single.returncode
    assert done.stderr.strip().splitlines() == single.stderr.strip().splitlines()


def test_a_missing_app_dir_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [*wfl_command(), "worker", "--once", "--processes", "2", "--dir", str(tmp_path),
         "--app-dir", str(tmp_path / "nowhere")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "app directory not found" in done.stderr


# -- what people see -------------------------------------------------------------------------


def test_the_live_table_shows_the_whole_worker(tmp_path: Path) -> None:
    client = Client(tmp_path)
    for _ in range(6):
        client.start(WIDE)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "140", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [*wfl_command(), "worker", "--once", "--processes", "2", "--dir", str(tmp_path)],
        stdout=follower, stderr=follower, env=env,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the terminal closed
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert "runs in progress" in screen
    totals = re.findall(r"(\d+) steps done .* (\d+) runs finished", screen)
    assert totals, screen[-2000:]
    assert totals[-1] == ("30", "6"), totals[-3:]  # both processes' counts, summed
    assert "run_finished" in screen  # the recent-events panel


def test_one_process_is_todays_worker(tmp_path: Path) -> None:
    client = Client(tmp_path)
    ids = [client.start(f"{SHARES}:pids", {"n": 1}) for _ in range(3)]
    start = time.monotonic()
    done = subprocess.run(
        [*wfl_command(), "worker", "--once", "--processes", "1", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 30
    pids = {p for r in ids for p in client.status(r).result}
    assert len(pids) == 1  # one process drove them all: the worker itself
