"""How to make K journals' appends durable together on this disk (issue 9, group commit).

One "group" = K files each get one small append, then all K are made durable. Ways:
  seq      one thread: write all K, then fsync each in turn
  par      write all K, then fsync each in its own pool thread (jbd2 batches concurrent
           fsyncs into one journal commit), wait for all
  syncfs   write all K, then one syncfs() of the file system (everything dirty on it)
  sfr      write all K, start their writeback (sync_file_range WRITE), then fsync each in turn
  fdatasync variants of seq/par
Prints groups/s and records/s for K in 1, 2, 4, 8, 16, 32.

    python bench/group_commit.py [--dir /tmp] [--seconds 1.0] [--dirty MB]

--dirty MB: meanwhile another process keeps rewriting a MB-sized file on the same file
system without syncing it (an unrelated writer: a copy, a pip install), so that the dirty
pages a syncfs() must write back are there too.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REC = b"x" * 120

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def run(scratch: str, k: int, how: str, seconds: float, pool: ThreadPoolExecutor) -> dict:
    fds = [
        os.open(os.path.join(scratch, f"j{k}-{i}"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        for i in range(k)
    ]
    ends = [0] * k
    lat: list[float] = []
    sync = os.fdatasync if how.endswith("fdatasync") else os.fsync
    groups = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    try:
        while True:
            g0 = time.perf_counter()
            for i, fd in enumerate(fds):
                os.pwrite(fd, REC, ends[i])
                ends[i] += len(REC)
            if how.startswith("seq"):
                for fd in fds:
                    sync(fd)
            elif how.startswith("par"):
                if k == 1:
                    sync(fds[0])
                else:
                    list(pool.map(sync, fds))
            elif how == "syncfs":
                syncfs(fds[0])
            elif how.startswith("sfr"):  # start every writeback, then fsync each in turn
                for fd in fds:
                    _libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), 2)
                for fd in fds:
                    sync(fd)
            lat.append(time.perf_counter() - g0)
            groups += 1
            if time.perf_counter() >= deadline:
                break
        dt = time.perf_counter() - t0
    finally:
        for fd in fds:
            os.close(fd)
    return {
        "k": k,
        "how": how,
        "groups_per_s": round(groups / dt),
        "records_per_s": round(groups * k / dt),
        "median_group_ms": round(statistics.median(lat) * 1e3, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--ks", default="1,2,4,8,16,32")
    ap.add_argument("--hows", default="seq,par,syncfs,seq-fdatasync,par-fdatasync")
    ap.add_argument("--dirty", type=int, default=0, help="MB another process keeps dirty")
    a = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix=".wfl-bench-group-", dir=a.dir)
    pool = ThreadPoolExecutor(32)
    print(f"load {os.getloadavg()}")
    dirtier = None
    if a.dirty:
        big = os.path.join(scratch, "big")
        code = (
            "import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT,0o600)\n"
            "chunk=b'y'*(1<<20)\nwhile True:\n for i in range(int(sys.argv[2])):\n"
            "  os.pwrite(fd,chunk,i<<20)\n"
        )
        dirtier = subprocess.Popen([sys.executable, "-c", code, big, str(a.dirty)])
        time.sleep(1.0)
    try:
        for k in map(int, a.ks.split(",")):
            for how in a.hows.split(","):
                r = run(scratch, k, how, a.seconds, pool)
                print(json.dumps(r), flush=True)
    finally:
        if dirtier is not None:
            dirtier.kill()
            dirtier.wait()
        shutil.rmtree(scratch, ignore_errors=True)
        pool.shutdown()
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
