"""Bounded tracebacks of user code, as journal values; and their text, the way Python prints it.

A recorded traceback ("tb" in fail, end, oc and child records) is a plain msgpack value:

    {"error": "ValueError: boom",                    # the exception line
     "frames": [[file, line, function, source], ...],  # outermost call first
     "cut": [i, n],          # optional: n frames were left out before frames[i]
     "cause": {...},         # optional: the traceback this error was raised from
     "context": True}        # optional: the cause was implicit (raised while handling it)

Only file, line, function name and source line are kept: never local variables, so no value
from the user's process (a secret from the environment, a password in a local) reaches the
journal through a traceback. The engine's own frames (wfl, asyncio, the thread pool) are left
out: what remains is what the user wrote and what it called.

Bounds: at most MAX_FRAMES frames and MAX_BYTES bytes for a whole traceback with its causes;
longer ones lose frames in the middle (the outermost and the innermost frames are the ones
that explain a failure), marked by "cut".
"""

from __future__ import annotations

import copy
import json
import linecache
import os
from types import TracebackType
from typing import Any

MAX_FRAMES = 40
MAX_BYTES = 16 * 1024
MAX_CHAIN = 4  # causes followed at most
_SOURCE_CHARS = 200
_FILE_CHARS = 400
_NAME_CHARS = 120
_ERROR_CHARS = 1000

Traceback = dict[str, Any]

_WFL_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB = os.path.dirname(os.__file__) + os.sep
# the machinery between the engine and user code: never what a user wants to read
_MACHINERY = tuple(
    _STDLIB + name
    for name in ("asyncio" + os.sep, "concurrent" + os.sep, "threading.py", "contextvars.py")
)


def capture(exc: BaseException, *, cause: Traceback | None = None) -> Traceback | None:
    """The bounded traceback of `exc` (and of what it was raised from). `cause` stands in for
    the chain when the error is a report of an earlier recorded failure (a failed step)."""
    chain = _chain(exc, cause)
    if chain is None:
        return None
    return bound(chain)


def _chain(exc: BaseException, given: Traceback | None, depth: int = 0) -> Traceback | None:
    frames = _frames(exc.__traceback__)
    tb: Traceback = {"error": _cut_text(_error_line(exc), _ERROR_CHARS), "frames": frames}
    recorded = getattr(exc, "traceback", None)  # StepFailed: the failed step's own record
    inner: Traceback | None = None
    implicit = False
    if isinstance(recorded, dict):
        inner = copy.deepcopy(recorded)  # bound() trims in place; the record stays whole
    elif given is not None and depth == 0:
        inner = copy.deepcopy(given)
    elif depth < MAX_CHAIN:
        if exc.__cause__ is not None:
            inner = _chain(exc.__cause__, None, depth + 1)
        elif exc.__context__ is not None and not exc.__suppress_context__:
            inner = _chain(exc.__context__, None, depth + 1)
            implicit = True
    if inner is not None:
        tb["cause"] = inner
        if implicit:
            tb["context"] = True
    if not frames and inner is None:
        return None  # nothing user code did: no traceback worth recording
    return tb


def _error_line(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _frames(tb: TracebackType | None) -> list[list[Any]]:
    out: list[list[Any]] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        filename = code.co_filename
        if not _is_engine(filename):
            out.append([filename, tb.tb_lineno, code.co_name, None])
        tb = tb.tb_next
    return out


def _is_engine(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_WFL_DIR) or path.startswith(_MACHINERY)


def _source(filename: str, line: int) -> str:
    return linecache.getline(filename, line).strip()


def bound(tb: Traceback) -> Traceback:
    """`tb` with at most MAX_FRAMES frames in all and MAX_BYTES bytes, cut in the middle;
    source lines are read here, only for the frames that are kept."""
    levels = _levels(tb)
    budget = MAX_FRAMES
    while True:
        _cut_frames(levels, budget)
        for level in levels:
            for frame in level["frames"]:
                if frame[3] is None:
                    frame[3] = _cut_text(_source(frame[0], frame[1]), _SOURCE_CHARS)
                frame[0] = _cut_text(str(frame[0]), _FILE_CHARS)
                frame[2] = _cut_text(str(frame[2]), _NAME_CHARS)
        # JSON is never smaller than msgpack for these values: an upper bound of what is written
        if len(json.dumps(tb)) <= MAX_BYTES or budget <= 2:
            return tb
        budget = max(2, budget * 3 // 4)


def _levels(tb: Traceback) -> list[Traceback]:
    levels: list[Traceback] = []
    level: Traceback | None = tb
    while level is not None and len(levels) <= MAX_CHAIN:
        level["frames"] = [list(f) for f in level.get("frames", [])]
        level["error"] = _cut_text(str(level.get("error", "")), _ERROR_CHARS)
        levels.append(level)
        level = level.get("cause")
    if level is not None:
        levels[-1].pop("cause", None)  # a longer chain than we follow: the rest is dropped
    return levels


def _cut_frames(levels: list[Traceback], budget: int) -> None:
    """Share `budget` frames among the levels (the largest gives up frames first) and cut
    each level's surplus from its middle."""
    sizes = [len(level["frames"]) for level in levels]
    while sum(sizes) > budget:
        biggest = max(range(len(sizes)), key=lambda i: sizes[i])
        sizes[biggest] -= 1
    for level, keep in zip(levels, sizes, strict=True):
        frames = level["frames"]
        if len(frames) <= keep:
            continue
        head = (keep + 1) // 2
        tail = keep - head
        omitted = len(frames) - keep
        earlier = level.get("cut")
        if earlier and head <= earlier[0] <= len(frames) - tail:
            omitted += int(earlier[1])  # cut again across the first gap: it is one gap now
        level["frames"] = frames[:head] + (frames[len(frames) - tail :] if tail else [])
        level["cut"] = [head, omitted]


def _cut_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- reading ----------------------------------------------------------------------------------


def is_traceback(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("frames"), list)


def format_tb(tb: Traceback) -> str:
    """The traceback as Python prints it: root cause first, then what it caused."""
    levels: list[Traceback] = []
    level: Any = tb
    while is_traceback(level) and len(levels) <= MAX_CHAIN:
        levels.append(level)
        level = level.get("cause")
    parts: list[str] = []
    for i, lv in enumerate(reversed(levels)):
        if i:
            implicit = levels[len(levels) - i].get("context")
            parts.append(
                "\nDuring handling of the above exception, another exception occurred:\n\n"
                if implicit
                else "\nThe above exception was the direct cause of the following exception:\n\n"
            )
        parts.append(_format_level(lv))
    return "".join(parts)


def _format_level(tb: Traceback) -> str:
    lines = []
    frames = tb.get("frames") or []
    cut = tb.get("cut")
    if frames:
        lines.append("Traceback (most recent call last):")
    for i, frame in enumerate(frames):
        if cut and i == cut[0]:
            lines.append(f"  [... {cut[1]} frames left out ...]")
        file, line, function, source = (list(frame) + [None] * 4)[:4]
        lines.append(f'  File "{file}", line {line}, in {function}')
        if source:
            lines.append(f"    {source}")
    if cut and cut[0] >= len(frames):
        lines.append(f"  [... {cut[1]} frames left out ...]")
    lines.append(str(tb.get("error", "")))
    return "\n".join(lines) + "\n"


def innermost(tb: Traceback | None) -> list[Any] | None:
    """The innermost frame of the user's own code (not a library's), else the innermost
    frame at all, of the error's root cause; None when there is no frame."""
    if not is_traceback(tb):
        return None
    assert tb is not None
    found = innermost(tb.get("cause"))  # the root cause is where it went wrong
    if found is not None:
        return found
    frames = tb.get("frames") or []
    for frame in reversed(frames):
        if not _is_library(str(frame[0])):
            return list(frame)
    return list(frames[-1]) if frames else None


def where(tb: Traceback | None, *, relative_to: str | None = None) -> str | None:
    """`file:line in function` of innermost(tb); paths under `relative_to` shortened."""
    frame = innermost(tb)
    if frame is None:
        return None
    path = str(frame[0])
    if relative_to is not None:
        rel = os.path.relpath(path, relative_to) if os.path.isabs(path) else path
        path = path if rel.startswith("..") else rel
    return f"{path}:{frame[1]} in {frame[2]}"


def _is_library(filename: str) -> bool:
    path = os.path.abspath(filename)
    return (
        path.startswith(_STDLIB)
        or f"{os.sep}site-packages{os.sep}" in path
        or f"{os.sep}dist-packages{os.sep}" in path
    )
