"""The run table of `wfl status` as text, without rich: its cells, and its layout when it goes
to a pipe.

Importing rich costs `wfl status` ~40 ms of its 200 ms budget (issue 9), and off a terminal
rich adds nothing to this table: no colour, 160 columns, and a table that fits is laid out
just as here (each column as wide as its widest cell, two spaces between, lines right-
stripped: bigtable's plain layout, which is this function). Anything else (a terminal, a
forced colour, cells that are not plain ASCII, fewer than BIG lines wider than 160) is left
to rich.
"""

from __future__ import annotations

import builtins
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

HEADERS = ("RUN", "WORKFLOW", "STATE", "STEPS", "CURRENT STEP", "NEXT WAKE", "AGE")
STATE_COLUMN = 2
PIPE_WIDTH = 160  # what render's console assumes off a terminal (rich would say 80)
BIG = 300  # lines from which bigtable lays a table out itself even when it is wider
GAP = "  "  # rich's padding (0, 1) between columns, with pad_edge=False


def row(status: dict[str, Any], counts: tuple[int, int, str], now: float) -> list[str]:
    """One run's cells; `status` holds its SPEC §4 keys, `counts` (steps done, steps
    recorded, current step label)."""
    done, total, current = counts
    finished = status["state"] != "in_progress"
    return [
        status["id"],
        status["workflow"] or "?",
        status["state"],
        f"{done}/{total}",
        current or "-",
        until(status["next_wake_at"], now) if not finished else "-",
        ago(status["created_at"], now),
    ]


def layout(columns: Sequence[list[str]], right: Sequence[bool]) -> tuple[list[str], int]:
    """Lines of a table of plain one-line ASCII cells (each column: header, then cells) and
    its width, as rich lays out such a table with box=None, pad_edge=False when it fits."""
    laid_out = []
    last = len(columns) - 1
    total = len(GAP) * last
    for i, (texts, to_right) in enumerate(zip(columns, right, strict=True)):
        width = max(map(len, texts))
        total += width
        if to_right:
            laid_out.append([t.rjust(width) for t in texts])
        elif i == last:
            laid_out.append(texts)
        else:
            laid_out.append([t.ljust(width) for t in texts])
    return [line.rstrip() for line in map(GAP.join, zip(*laid_out, strict=True))], total


def simple(text: str) -> bool:
    return text.isascii() and "\n" not in text


def plain_lines(rows: list[list[str]]) -> list[str] | None:
    """The run table's lines for a pipe, or None when rich must lay it out."""
    columns = [[head, *(r[i] for r in rows)] for i, head in enumerate(HEADERS)]
    if not all(simple("".join(texts)) for texts in columns):
        return None
    lines, width = layout(columns, [False] * len(HEADERS))
    return lines if width <= PIPE_WIDTH or len(lines) >= BIG else None


def plain_stdout() -> bool:
    """Whether render's console would print to stdout without colour at PIPE_WIDTH columns:
    stdout is no terminal and nothing tells rich to treat it as one (rich's own rules:
    TTY_COMPATIBLE, then FORCE_COLOR, then isatty), and render's console is not in use
    (a test or embedding program may have replaced it)."""
    if "wfl.render" in sys.modules or hasattr(builtins, "get_ipython"):  # (Jupyter: colour)
        return False
    try:
        if sys.stdout.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    compatible = os.environ.get("TTY_COMPATIBLE", "")
    if compatible == "1":
        return False
    force = os.environ.get("FORCE_COLOR")
    return compatible == "0" or force is None or force == ""


def ago(iso_time: str | None, now: float | None = None) -> str:
    if not iso_time:
        return "-"
    from datetime import datetime

    ts = datetime.fromisoformat(iso_time).timestamp()
    return span((now or time.time()) - ts)


def until(iso_time: str | None, now: float | None = None) -> str:
    if not iso_time:
        return "-"
    from datetime import datetime

    delta = datetime.fromisoformat(iso_time).timestamp() - (now or time.time())
    return "now" if delta <= 0 else "in " + span(delta)


def span(seconds: float) -> str:
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"
