"""Wake-ups for the journal directory store: each listener (a worker, or a watcher such as
the web view) binds an abstract unix datagram socket named after a marker file in
`<dir>/workers/` (or `<dir>/watchers/`); notifiers send the run id to every marker's socket.
An idle worker so blocks on its socket instead of polling the directory.

A process of `wfl worker --processes N` names its share of the runs in its marker
(`<token>.s<index>of<N>`, see share.py): the news of a new run then goes to the process whose
share it is (and to every listener that names none), not to its siblings, which would only wake
to put it off (wfl/share.py). Should that process be gone (its socket refuses), the news goes
to everyone, as before."""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

NOTIFY_TIMEOUT = 0.5  # seconds to wait for a busy worker's wake-up queue
DIR_MODE = 0o700


def socket_address(token: str) -> str:
    return "\0wfl-worker-" + token


def share_of(run_id: str, count: int) -> int:
    """The process (0..count-1) of a `wfl worker --processes count` whose share `run_id` is:
    stable across processes and runs (Python's hash() of a str is salted per process)."""
    return zlib.crc32(run_id.encode()) % count


def _share_in(name: str) -> tuple[int, int] | None:
    """(index, count) a marker's name gives, if any."""
    _, dot, tail = name.rpartition(".s")
    index, of, count = tail.partition("of")
    if dot and of and index.isdigit() and count.isdigit() and int(index) < int(count):
        return int(index), int(count)
    return None


def listen(
    directory: Path, *, worker: bool = True, share: tuple[int, int] | None = None
) -> tuple[str, DatagramListener] | None:
    """Bind a wake-up socket and publish its marker; None where abstract sockets are missing
    (callers then rescan). share: (index, count) of a process of a worker with `count`
    processes (it then hears of new runs of its share only)."""
    import socket

    token = f"{os.getpid()}-{os.urandom(4).hex()}"
    if share is not None and share[1] > 1:
        token += f".s{share[0]}of{share[1]}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(socket_address(token))
    except OSError as exc:
        import logging  # (here: `wfl status` imports this module and never logs)

        logging.getLogger(__name__).warning(
            "no wake-up socket (%s); new work is found by rescanning", exc
        )
        sock.close()
        return None
    sock.setblocking(False)
    sub = directory / ("workers" if worker else "watchers")
    sub.mkdir(mode=DIR_MODE, exist_ok=True)
    marker = sub / token
    marker.touch(mode=0o600)
    return token, DatagramListener(sock, marker)


def _markers(directory: Path) -> Iterator[tuple[str, str]]:
    """(subdirectory, name) of every listener's marker."""
    for sub in ("workers", "watchers"):
        try:
            names = os.listdir(os.path.join(directory, sub))
        except FileNotFoundError:
            continue
        yield from ((sub, name) for name in names)


_SENDER: list[tuple[int, Any]] = []  # (pid, socket): one sending socket per process, reused


def _sender() -> Any:
    if _SENDER and _SENDER[0][0] == os.getpid():
        return _SENDER[0][1]
    import _socket  # the C module: `socket` adds ~4 ms of enum set-up to `wfl start`

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    # A worker's queue holds only ~10 datagrams: when a burst of starts fills it, wait
    # briefly for it to drain rather than drop the news (the run would wait for the next
    # rescan).
    sock.settimeout(NOTIFY_TIMEOUT)
    _SENDER[:] = [(os.getpid(), sock)]  # (a forked child makes its own)
    return sock


def notify(directory: Path, run_id: str, *, skip: str = "", new: bool = False) -> None:
    """Send `run_id` to every listener of `directory` but `skip`. new: a run just created,
    which only its share's process of a worker needs to hear of (see the module docstring)."""
    markers = [m for m in _markers(directory) if m[1] != skip]
    if not markers:
        return
    message = run_id.encode()
    sock = _sender()
    others: list[tuple[str, str]] = []
    owner_gone = False
    for sub, name in markers:
        share = _share_in(name) if new else None
        if share is not None and share_of(run_id, share[1]) != share[0]:
            others.append((sub, name))
            continue
        owner_gone |= not _send(sock, message, directory, sub, name) and share is not None
    if owner_gone:  # its owner is gone: whoever else serves the directory takes it
        for sub, name in others:
            _send(sock, message, directory, sub, name)


def _send(sock: Any, message: bytes, directory: Path, sub: str, name: str) -> bool:
    try:
        sock.sendto(message, socket_address(name))
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(OSError):  # its listener is gone
            os.unlink(os.path.join(directory, sub, name))
        return False
    except OSError:
        return False  # stuck: it will find the run at its next rescan


class DatagramListener:
    """A bound wake-up socket and the marker file that lets notifiers find it."""

    def __init__(self, sock: socket.socket, marker: Path) -> None:
        self._sock = sock
        self._marker = marker

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> list[str]:
        news: list[str] = []
        while True:
            try:
                data = self._sock.recv(256)
            except (BlockingIOError, InterruptedError):
                return news
            news.append(data.decode(errors="replace"))

    def close(self) -> None:
        self._sock.close()
        self._marker.unlink(missing_ok=True)
