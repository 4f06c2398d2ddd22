"""The `wfl` executable's entry point: a fast path for `wfl start`, typer for everything else.

`wfl start` is the command scripts call in loops, so it is parsed here without importing typer
or rich (about half of its start-up time). Anything unusual (`--help`, an unknown or
malformed option) falls through to the typer app, which owns help and usage errors.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .errors import InvalidArguments, WflError

_START_OPTIONS = {"--arg", "--args-json", "--on-complete", "--context", "--dir"}


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArguments(
            f"{what} is not valid JSON: {exc.msg} (at column {exc.colno})"
        ) from None


def parse_args(pairs: list[str], args_json: str | None) -> dict[str, Any]:
    """Workflow arguments from --args-json and --arg NAME=VALUE (which wins)."""
    args: dict[str, Any] = {}
    if args_json is not None:
        parsed = parse_json(args_json, "--args-json")
        if not isinstance(parsed, dict):
            raise InvalidArguments('--args-json must be a JSON object, e.g. \'{"name": "Ada"}\'')
        args.update(parsed)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidArguments(f"--arg expects NAME=VALUE, got {pair!r}")
        args[key.strip()] = value
    return args


def start_run(
    flow: str,
    pairs: list[str],
    args_json: str | None,
    on_complete: str | None,
    context: str | None,
    directory: str | None,
) -> str:
    from .client import Client

    ctx = parse_json(context, "--context") if context is not None else None
    if on_complete is not None and ":" not in on_complete:
        raise InvalidArguments("--on-complete expects FLOW.py:FUNCTION")
    client = Client(directory)
    return client.start(flow, parse_args(pairs, args_json), on_complete=on_complete, context=ctx)


def _parse_start(argv: list[str]) -> dict[str, Any] | None:
    """Options of `wfl start`, or None to let typer handle (and explain) the command line."""
    found: dict[str, Any] = {"pairs": [], "flow": None}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            if name not in _START_OPTIONS:
                return None
            if not eq:
                if i + 1 >= len(argv):
                    return None
                i += 1
                value = argv[i]
            if name == "--arg":
                found["pairs"].append(value)
            elif name in found:
                return None  # given twice: let typer decide
            else:
                found[name] = value
        elif token.startswith("-") or found["flow"] is not None:
            return None
        else:
            found["flow"] = token
        i += 1
    return found if found["flow"] is not None else None


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["start"]:
        options = _parse_start(argv[1:])
        if options is not None:
            try:
                run_id = start_run(
                    options["flow"],
                    options["pairs"],
                    options.get("--args-json"),
                    options.get("--on-complete"),
                    options.get("--context"),
                    options.get("--dir"),
                )
            except WflError as exc:
                fail(str(exc), exc.exit_code)
            sys.stdout.write(run_id + "\n")
            return
    from .cli import main as typer_main

    typer_main()


def fail(message: str, code: int) -> None:
    sys.stderr.write(f"wfl: error: {message}\n")
    sys.exit(code)
