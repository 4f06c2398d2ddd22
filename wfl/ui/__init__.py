"""The web view, `wfl ui` (SPEC §9): a Starlette app under uvicorn, in the optional `ui` extra.

Nothing here imports the extra's libraries: `serve` checks for them first, so without them
`wfl ui` says in one line what to install.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from wfl.errors import InvalidArguments, WflError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8484
_NEEDS = ("starlette", "uvicorn", "watchfiles")


class MissingExtra(WflError):
    """The `ui` extra is not installed."""


def check_installed() -> None:
    missing = []
    for module in _NEEDS:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingExtra(
            f"wfl ui needs the ui extra ({', '.join(missing)} missing): pip install 'wfl[ui]'"
        )


def store_dir(store: str | None, directory: Path | None) -> Path | None:
    """The journal directory named by --store / --dir (SPEC §7), None for the default.

    Only journal directories are served for now; the PostgreSQL store plugs in through
    `changes.change_feed` and `Client` once it exists.
    """
    import os

    if store is not None and directory is not None:
        raise InvalidArguments("give --store or --dir, not both")
    if store is None and directory is None:
        store = os.environ.get("WFL_STORE") or None
    if store is None:
        return directory
    if store.startswith(("postgresql://", "postgres://")):
        raise InvalidArguments("wfl ui serves journal directories only in this version")
    return Path(store.removeprefix("file:"))


def serve(directory: Path | None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the web view of the runs in `directory` until interrupted."""
    check_installed()
    from .server import run_server

    run_server(directory, host=host, port=port)
