"""This disk's fsync limits, for workload 7 (durability ceiling).

The minimal part of ../shared/bench/disk_limits.py (same record size and method), copied so
that bench/ runs from a fresh clone:

  a  append a 100-byte record + fsync, one writer          fsyncs (= durable commits) per s
  d  group commit: 64 appends per fsync                    records per s
  h  8 threads, each appending + fdatasync its OWN file    records per s (total)

wfl keeps one journal file per run, so the steps of 8 concurrent runs cannot share an fsync:
`h` is the physical ceiling for workload 1 at one fsync per step, `a` the ceiling of a single
serial writer, and `d` what a single shared log with group commit could reach.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable

REC = b"x" * 99 + b"\n"  # 100-byte record, as in disk_limits.py


def append_sync(
    path: str, sync: Callable[[int], None] | None, seconds: float, cap: int, batch: int = 1
) -> dict:
    """Append REC; call sync(fd) after every `batch` records."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o644)
    n = 0
    syncs = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    try:
        while n < cap:
            for _ in range(batch):
                os.write(fd, REC)
            if sync is not None:
                sync(fd)
                syncs += 1
            n += batch
            if time.perf_counter() >= deadline:
                break
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    return {"records": n, "seconds": dt, "records_per_s": n / dt, "syncs_per_s": syncs / dt}


def parallel_append(dirpath: str, threads: int, seconds: float, cap: int) -> dict:
    """`threads` threads, each appending REC + fdatasync to its own file."""
    os.makedirs(dirpath, exist_ok=True)
    counts = [0] * threads
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def work(k: int) -> None:
        fd = os.open(
            os.path.join(dirpath, f"run{k}.journal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )
        start.wait()
        n = 0
        try:
            while n < cap and time.perf_counter() < deadline[0]:
                os.write(fd, REC)
                os.fdatasync(fd)
                n += 1
        finally:
            os.close(fd)
        counts[k] = n

    ths = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ths:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in ths:
        t.join()
    dt = time.perf_counter() - t0
    n = sum(counts)
    return {"threads": threads, "records": n, "seconds": dt, "records_per_s": n / dt}


def measure(target: str, seconds: float = 1.0, cap: int = 20000) -> dict:
    """a, d and h on a scratch directory under `target` (removed afterwards)."""
    scratch = tempfile.mkdtemp(prefix=".wfl-bench-disk-", dir=target)
    try:
        f = os.path.join(scratch, "journal.bin")
        return {
            "dir": target,
            "seconds_per_test": seconds,
            "a_fsync_each": append_sync(f, os.fsync, seconds, cap),
            "d_group64_fsync": append_sync(f, os.fsync, seconds, cap * 64, batch=64),
            "h_8threads_own_file_fdatasync": parallel_append(
                os.path.join(scratch, "par"), 8, seconds, cap
            ),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
