"""A real `wfl ui` process for the web view's tests; a small HTTP and Server-Sent Events client."""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or shutil.which("wfl") or "wfl"
UI_FLOWS = Path(__file__).resolve().parent / "ui_flows"


def wfl_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WFL_DIR", "WFL_STORE")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def wfl(*args: str | Path, cwd: Path, timeout: float = 60) -> str:
    """Run the real `wfl` command; returns its stdout (it must succeed)."""
    done = subprocess.run([WFL, *map(str, args)], cwd=cwd, env=wfl_env(), text=True,
                          capture_output=True, timeout=timeout, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class UiServer:
    """`wfl ui --port 0` in a subprocess; stopped with SIGINT (Ctrl-C), as a person would."""

    def __init__(
        self, directory: Path | None = None, *, host: str = "127.0.0.1",
        store: str | None = None, log_dir: Path | None = None,
    ) -> None:  # fmt: skip
        where = ["--dir", str(directory)] if directory is not None else ["--store", str(store)]
        # its log goes to a file (a pipe nobody reads could fill up and block the server)
        self.log = (log_dir or (directory or Path(".")).parent) / f"ui-{host}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [WFL, "ui", *where, "--host", host, "--port", "0"],
                stdout=subprocess.PIPE, stderr=log, text=True, env=wfl_env(),
            )  # fmt: skip
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("wfl ui: "):
            self.proc.kill()
            raise AssertionError(f"wfl ui did not start: {line!r} {self.log.read_text()!r}")
        self.url = line.split()[-1]
        parts = urlsplit(self.url)
        self.host = parts.hostname or host
        self.port = parts.port or 0
        self.base = f"http://{parts.netloc}"
        self.token = parts.query.removeprefix("token=") or None

    def request(
        self, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def auth(self) -> dict[str, str]:
        return {"X-Wfl-Token": self.token} if self.token else {}

    def csrf(self) -> str:
        page = self.request("GET", "/", headers=self.auth()).text
        start = page.index("&quot;csrf&quot;: &quot;") + len("&quot;csrf&quot;: &quot;")
        return page[start : page.index("&quot;", start)]

    def post(
        self, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> Response:
        headers = {**self.auth(), **(headers or {})}
        return self.request("POST", path, body=body or {}, headers=headers)

    def stream(self, query: str) -> Stream:
        return Stream(self, query)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        assert self.errors() == "", "the server logged errors"
        return self.proc.returncode

    def errors(self) -> str:
        """What the server logged (it logs only warnings and errors)."""
        return self.log.read_text()


class Stream:
    """One Server-Sent Events connection; `next()` returns the next snapshot pushed."""

    def __init__(self, server: UiServer, query: str) -> None:
        self.conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        self.conn.request("GET", "/api/stream?" + query, headers=server.auth())
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        assert self.resp.getheader("content-type", "").startswith("text/event-stream")

    def next(self, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        data: list[str] = []
        while time.monotonic() < deadline:
            line = self.resp.fp.readline().decode()
            if line.startswith("data: "):
                data.append(line[len("data: ") :].rstrip("\n"))
            elif line in ("\n", "\r\n") and data:
                return json.loads("\n".join(data))
            elif line == "":
                raise AssertionError("the stream ended")
        raise AssertionError(f"no snapshot within {timeout} s")

    def until(self, check: Any, timeout: float = 5.0) -> Any:
        """The first snapshot for which `check(snapshot)` is true."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching snapshot within {timeout} s")
            snapshot = self.next(left)
            if check(snapshot):
                return snapshot

    def close(self) -> None:
        self.conn.close()
