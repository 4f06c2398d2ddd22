"""`wfl worker`'s command body, shared by the typer command (wfl/cli.py) and the entry point's
fast path (wfl/entry.py).

The fast path matters for memory, not only for start-up: typer pulls in pydantic and rich
(~25 MB), and `wfl worker` is a long-lived process tree — a supervisor and one process per
CPU, each of which is `wfl worker` again. Through the fast path the supervisor imports only
wfl/processes.py and the store's module, and each child only what serving needs.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from .errors import FlowLoadError, InvalidArguments

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# typer's own rules for these options are min=1 (whole numbers) and min=0 (seconds); a value
# the fast path does not take as plainly valid goes to typer, which explains it.
_WHOLE = re.compile(r"^[0-9]+$")
_SECONDS = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def parse_level(text: str) -> int:
    """A --log-level value (any case) as a logging level."""
    name = text.strip().upper()
    if name not in LEVELS:
        raise InvalidArguments(f"--log-level must be one of {', '.join(LEVELS)}, not {text!r}")
    return int(getattr(logging, name))


def fast_options(found: dict[str, Any]) -> dict[str, Any] | None:
    """worker_command's keyword arguments from entry's parse of the command line, or None
    when a value is not plainly valid (typer then reports it as a usage error)."""
    whole: dict[str, int | None] = {}
    for name, default in (("--max-parallelism", 64), ("--processes", None)):
        text = found.get(name)
        if text is None:
            whole[name] = default
        elif _WHOLE.match(text) and int(text) >= 1:
            whole[name] = int(text)
        else:
            return None
    grace = found.get("--grace", "10")
    if not _SECONDS.match(grace):
        return None
    return {
        "max_parallelism": whole["--max-parallelism"],
        "once": bool(found.get("--once")),
        "processes": whole["--processes"],
        "grace": float(grace),
        "app_dir": found.get("--app-dir"),
        "reload": bool(found.get("--reload")),
        "log_level": found.get("--log-level", "INFO"),
        "dir": found.get("--dir"),
        "store": found.get("--store"),
    }


def worker_command(
    *,
    max_parallelism: int,
    once: bool,
    processes: int | None,
    grace: float,
    app_dir: str | None,
    reload: bool,
    log_level: str,
    dir: str | os.PathLike[str] | None,
    store: str | None,
) -> int:
    """Serve in this process, or supervise one process per CPU (`--processes N`); the exit
    code."""
    from .processes import CHILD_ENV
    from .stores import open_store

    level = parse_level(log_level)
    chosen = open_store(store, dir=dir)  # bad --dir/--store: one line, before any child starts
    count = processes if processes is not None else (os.cpu_count() or 1)
    if count > 1 and not os.environ.get(CHILD_ENV):
        from .processes import supervise

        if app_dir is not None and not os.path.isdir(app_dir):
            raise FlowLoadError(f"app directory not found: {app_dir}")  # not one per child
        argv = ["worker", "--max-parallelism", str(max_parallelism), "--grace", str(grace),
                "--log-level", log_level, *(["--reload"] if reload else []),
                *(["--app-dir", app_dir] if app_dir is not None else []),
                *(["--dir", os.fspath(dir)] if dir is not None else []),
                *(["--store", store] if store is not None else [])]  # fmt: skip
        return supervise(count, argv, once=once, grace=grace, store=chosen)
    from .foreground import serve

    serve(
        chosen, max_parallelism=max_parallelism, once=once, grace=grace,
        app_dir=app_dir, reload=reload, log_level=level,
    )  # fmt: skip
    return 0
