"""`wfl ui`: bind, print the URL, serve the app under uvicorn until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from wfl.client import Client
from wfl.errors import InvalidArguments

from .guard import LOOPBACK, is_loopback

if TYPE_CHECKING:
    from .hub import Hub


def run_server(store: str | None, directory: Path | None, *, host: str, port: int) -> None:
    import uvicorn

    from .app import create_app
    from .hub import Hub

    client = Client(directory, store=store)
    client.store.ensure()  # the watcher needs the directory (or schema); runs will land there
    sock = _listen(host, port)
    port = sock.getsockname()[1]
    token = None if is_loopback(host) else os.urandom(16).hex()
    shown = f"[{host}]" if ":" in host else host
    hosts = {f"{h}:{port}" for h in (shown, *LOOPBACK)} | {f"[::1]:{port}"}
    hub = Hub(client)
    app = create_app(client, csrf=os.urandom(16).hex(), token=token, hosts=hosts, hub=hub)
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    sys.stdout.write(f"wfl ui: {url}\n")
    sys.stdout.write(f"  runs in {client.dir} · Ctrl-C stops\n")
    sys.stdout.flush()
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=1, lifespan="on", access_log=False
    )
    server = _server_class()(config)
    server.hub = hub
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it: exit 0
        server.run(sockets=[sock])


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """Ends the event streams as soon as shutdown starts: uvicorn waits for open
        connections to finish, and a stream never would."""

        hub: Hub

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            with contextlib.suppress(RuntimeError):  # no loop yet: nothing is streaming
                asyncio.get_event_loop().call_soon_threadsafe(self.hub.close_streams)
            super().handle_exit(sig, frame)

    return Server


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise InvalidArguments(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
