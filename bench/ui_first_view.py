"""How fast `wfl ui` shows a store of many runs: start-up, the first page, the first push.

    python bench/ui_first_view.py [--runs 10000] [--dir DIR]

Fills DIR (default: a temp dir; reused when it already holds enough runs) with RUNS runs of
tests/ui_flows/pipeline.py, a tenth of them canceled, starts a real `wfl ui`, and times on
loopback (so: server time plus a few hundred microseconds):
  - start-up: process start until the server answers (the hub lists every run once);
  - the first view: GET / (the page) + its first snapshot (the stream's first event, the
    newest 50 runs with counts), and GET /api/runs (the same page as JSON), cold and warm;
  - a filtered page (state=canceled), and page 100;
  - a run started while it watches: from `start` returning until the push arrives.
Prints one line per figure and a JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PIPELINE = str(REPO / "tests" / "ui_flows" / "pipeline.py")


def fill(directory: Path, runs: int) -> None:
    from wfl import Client
    from wfl.loader import load_workflow

    client = Client(directory)
    have = len(client.store.run_ids()) if directory.exists() else 0
    wf = load_workflow(PIPELINE, "pipeline")
    began = time.perf_counter()
    for i in range(have, runs):
        run_id = client.start(wf, {"batches": i % 7})
        if i % 10 == 0:
            client.cancel(run_id)
    if runs > have:
        print(f"created {runs - have} runs in {time.perf_counter() - began:.1f} s")


def timed_get(host: str, port: int, path: str) -> tuple[float, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    began = time.perf_counter()
    conn.request("GET", path)
    body = conn.getresponse().read()
    elapsed = time.perf_counter() - began
    conn.close()
    return elapsed, body


def first_event(host: str, port: int, query: str) -> tuple[float, dict[str, object]]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    began = time.perf_counter()
    conn.request("GET", "/api/stream?" + query)
    resp = conn.getresponse()
    while True:
        line = resp.fp.readline().decode()
        if line.startswith("data: "):
            elapsed = time.perf_counter() - began
            conn.close()
            return elapsed, json.loads(line[6:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None)
    options = parser.parse_args()
    tmp = None
    directory = options.dir
    if directory is None:
        tmp = tempfile.mkdtemp(prefix="wfl-ui-bench-")
        directory = Path(tmp) / "runs"
    fill(directory, options.runs)
    wfl = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"
    env = {k: v for k, v in os.environ.items() if k not in ("WFL_DIR", "WFL_STORE")}
    figures: dict[str, float] = {}
    began = time.perf_counter()
    proc = subprocess.Popen([wfl, "ui", "--dir", str(directory), "--port", "0"], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        host, port = "127.0.0.1", int(url.rsplit(":", 1)[1].strip("/"))
        timed_get(host, port, "/static/icon.svg")  # answers once the hub has listed the runs
        figures["startup_s"] = time.perf_counter() - began
        figures["page_ms"] = timed_get(host, port, "/")[0] * 1000
        took, snapshot = first_event(host, port, "view=runs")
        figures["first_snapshot_ms"] = took * 1000
        figures["first_view_ms"] = figures["page_ms"] + figures["first_snapshot_ms"]
        assert snapshot["all"] >= options.runs, snapshot["all"]
        figures["api_runs_cold_ms"] = timed_get(host, port, "/api/runs")[0] * 1000
        figures["api_runs_warm_ms"] = min(
            timed_get(host, port, "/api/runs")[0] for _ in range(5)
        ) * 1000  # fmt: skip
        figures["filtered_ms"] = timed_get(host, port, "/api/runs?state=canceled")[0] * 1000
        figures["page_100_ms"] = timed_get(host, port, "/api/runs?page=100")[0] * 1000
        conn = http.client.HTTPConnection(host, port, timeout=30)
        conn.request("GET", "/api/stream?view=runs")
        resp = conn.getresponse()
        while not resp.fp.readline().startswith(b"data: "):
            pass
        from wfl import Client

        run_id = Client(directory).start(PIPELINE)
        started = time.perf_counter()
        while True:
            line = resp.fp.readline()
            if line.startswith(b"data: ") and run_id.encode() in line:
                figures["push_after_start_ms"] = (time.perf_counter() - started) * 1000
                break
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    for name, value in figures.items():
        print(f"{name:>22}  {value:8.1f}")
    rounded = {k: round(v, 1) for k, v in figures.items()}
    print("JSON " + json.dumps({"runs": options.runs, **rounded}))


if __name__ == "__main__":
    main()
