"""The web view, `wfl ui` (SPEC §9): a Starlette app under uvicorn, in the optional `ui` extra.

Nothing here imports the extra's libraries: `serve` checks for them first, so without them
`wfl ui` says in one line what to install.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from wfl.errors import WflError

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


def serve(
    store: str | None,
    directory: Path | None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
) -> None:
    """Serve the web view of a store's runs (SPEC §7 precedence) until interrupted."""
    check_installed()
    from .server import run_server

    run_server(store, directory, host=host, port=port)
