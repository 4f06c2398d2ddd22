"""Disk full while appending (ENOSPC), through the real CLI, on a tiny tmpfs of our own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wfl import journal

FLOWS = Path(__file__).resolve().parent / "cli_flows"
WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("needs to mount a tmpfs (root); the journal-level ENOSPC tests still run")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def wfl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WFL, *args], capture_output=True, text=True, timeout=timeout)


def fill(path: Path) -> None:
    """Write zeros until the file system says it is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_disk_full_pauses_the_run_and_loses_nothing(tiny_disk: Path) -> None:
    runs = tiny_disk / "runs"
    started = wfl("start", str(FLOWS / "wide_steps.py"), "--dir", str(runs))
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    path = runs / f"{run_id}.journal"
    before = path.read_bytes()

    fill(tiny_disk / "filler")
    worker = wfl("worker", "--once", "--dir", str(runs))
    assert "Traceback" not in worker.stdout + worker.stderr
    assert "disk full" in worker.stdout + worker.stderr
    # nothing half-written: the journal holds whole records only, at least what it had
    assert path.read_bytes().startswith(before)
    assert journal.read(path).torn == 0

    refused = wfl("start", str(FLOWS / "wide_steps.py"), "--dir", str(runs))
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "No space left" in refused.stderr or "disk full" in refused.stderr
    assert sorted(p.name for p in runs.glob("*.journal")) == [path.name]

    os.unlink(tiny_disk / "filler")
    worker = wfl("worker", "--once", "--dir", str(runs))
    assert worker.returncode == 0, worker.stderr
    status = wfl("status", run_id, "--json", "--dir", str(runs))
    assert '"state": "completed"' in status.stdout


@pytest.mark.parametrize("last", ["end", "oc"])
def test_disk_full_at_the_last_record_pauses_the_run_and_the_worker_exits(
    tiny_disk: Path, last: str
) -> None:
    """The end record (a big result) or the on_complete record (a big error) does not fit:
    the run is paused, its lease released, and `worker --once` exits; later it completes."""
    runs = tiny_disk / "runs"
    flow = str(FLOWS / "big_end.py")
    args = ["--arg", "big=true"] if last == "end" else ["--on-complete", f"{flow}:complains"]
    started = wfl("start", flow, *args, "--dir", str(runs))
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()

    filler = tiny_disk / "filler"
    fill(filler)
    os.truncate(filler, os.path.getsize(filler) - 64 * 1024)  # room for small records only
    try:
        worker = wfl("worker", "--once", "--dir", str(runs), timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("wfl worker --once did not exit after disk full at the last record")
    assert "Traceback" not in worker.stdout + worker.stderr
    assert "disk full" in worker.stdout + worker.stderr
    assert journal.read(runs / f"{run_id}.journal").torn == 0

    os.unlink(filler)
    worker = wfl("worker", "--once", "--dir", str(runs))
    assert worker.returncode == 0, worker.stderr
    status = wfl("status", run_id, "--json", "--dir", str(runs))
    assert '"state": "completed"' in status.stdout
    records = [r["t"] for r in journal.read(runs / f"{run_id}.journal").records]
    assert records.count("end") == 1
    assert records[-1] == ("end" if last == "end" else "oc")
