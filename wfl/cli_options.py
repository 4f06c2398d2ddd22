"""Options every command takes, shared by the command modules (cli.py, cli_schedule.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Journal directory (default: $WFL_DIR, else ./.wfl)."),
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store: a directory, file:PATH or postgresql://USER@HOST/DB "
        "(default: $WFL_STORE, else $WFL_DIR, else ./.wfl).",
    ),
]
