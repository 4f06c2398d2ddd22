"""The `wfl` executable's entry point: a fast path for `wfl start`, `wfl status`, `wfl show`
and `wfl worker`, typer for everything else.

These are what scripts call in loops and people type most, and typer (which builds pydantic
adapters for its options) costs more than the work itself (~0.4 s of `wfl show`). So they
are parsed here, by the same table of options, and call the same functions as the typer
commands. `wfl worker` is here for memory: it is a tree of long-lived processes (a
supervisor and one per CPU, each `wfl worker` again), and typer's imports would cost each of
them ~25 MB (wfl/workercmd.py). Anything unusual
(`--help`, an unknown or malformed option) falls through to the typer app, which owns help
and usage errors.
"""

from __future__ import annotations

import sys
from typing import Any

from .errors import InvalidArguments, WflError

# The commands parsed here: options that take a value (repeatable ones marked), flags, and
# how many positional arguments (at least, at most).
_FAST = {
    "start": ({"--arg": True, "--args-json": False, "--on-complete": False, "--context": False,
               "--dir": False, "--key": False, "--deadline": False, "--store": False}, set(),
              (1, 1)),
    "status": ({"--state": False, "--workflow": False, "--limit": False, "--dir": False,
                "--store": False}, {"--json", "--watch", "--why", "--all", "--traceback"}, (0, 1)),
    "show": ({"--dir": False, "--store": False}, {"--json"}, (1, 1)),
    "worker": ({"--max-parallelism": False, "--processes": False, "--grace": False,
                "--app-dir": False, "--log-level": False, "--dir": False, "--store": False},
               {"--once", "--reload"}, (0, 0)),
}  # fmt: skip


def parse_json(text: str, what: str) -> Any:
    import json

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


def parse_duration(text: str, what: str = "duration", *, positive: bool = True) -> float:
    """Seconds from "90s", "30m", "12h", "7d", "2w" (or plain seconds)."""
    import re

    match = re.match(r"^(\d+(?:\.\d+)?)\s*([smhdw]?)$", text.strip())
    if not match:
        raise InvalidArguments(f"bad {what} {text!r}: use e.g. 90s, 30m, 12h, 7d, 2w")
    seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if positive and seconds <= 0:
        raise InvalidArguments(f"{what} must be positive, got {text!r}")
    return seconds


_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def start_run(
    flow: str,
    pairs: list[str],
    args_json: str | None,
    on_complete: str | None,
    context: str | None,
    directory: str | None,
    key: str | None = None,
    deadline: str | None = None,
    store: str | None = None,
) -> str:
    from .client import Client

    ctx = parse_json(context, "--context") if context is not None else None
    if on_complete is not None and ":" not in on_complete:
        raise InvalidArguments("--on-complete expects FLOW.py:FUNCTION")
    limit = parse_duration(deadline, "--deadline") if deadline is not None else None
    if key is not None:
        from .ops import check_key

        check_key(key)  # before the flow is imported: bad input costs nothing
    client = Client(directory, store=store)
    return client.start(flow, parse_args(pairs, args_json), on_complete=on_complete, context=ctx,
                        key=key, deadline=limit)  # fmt: skip


def _parse(command: str, argv: list[str]) -> dict[str, Any] | None:
    """The options of a fast-path command, or None to let typer handle (and explain) the
    command line: --help, unknown options, missing values, repeated options."""
    valued, flags, (least, most) = _FAST[command]
    found: dict[str, Any] = {"positional": [], "--arg": []}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("-"):
            name, eq, value = token.partition("=")
            if name in flags and not eq:
                found[name] = True
            elif name in valued:
                if not eq:
                    if i + 1 >= len(argv):
                        return None
                    i += 1
                    value = argv[i]
                if valued[name]:
                    found[name].append(value)
                elif name in found:
                    return None
                else:
                    found[name] = value
            else:
                return None
        else:
            found["positional"].append(token)
        i += 1
    return found if least <= len(found["positional"]) <= most else None


def _start(options: dict[str, Any]) -> None:
    run_id = start_run(
        options["positional"][0],
        options["--arg"],
        options.get("--args-json"),
        options.get("--on-complete"),
        options.get("--context"),
        options.get("--dir"),
        options.get("--key"),
        options.get("--deadline"),
        options.get("--store"),
    )
    sys.stdout.write(run_id + "\n")


def parse_limit(text: str | None) -> int | None:
    """--limit N: a whole number from 1, in ASCII digits (the same rule on the fast path and
    under typer; `int()` alone would take "٣" and str.isdigit "²")."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise InvalidArguments(f"--limit must be a whole number of runs, 1 or more, not {text!r}")
    return int(text)


def _status(options: dict[str, Any]) -> None:
    limit = parse_limit(options.get("--limit"))
    from .views import status_command

    positional = options["positional"]
    status_command(
        options.get("--dir"),
        positional[0] if positional else None,
        json_=bool(options.get("--json")),
        state=options.get("--state"),
        workflow=options.get("--workflow"),
        limit=limit,
        all_=bool(options.get("--all")),
        watch=bool(options.get("--watch")),
        why=bool(options.get("--why")),
        traceback=bool(options.get("--traceback")),
        store=options.get("--store"),
    )


def _worker(options: dict[str, Any]) -> None:
    from .workercmd import worker_command

    code = worker_command(**options)
    if code:
        sys.exit(code)


def _show(options: dict[str, Any]) -> None:
    from .views import show_command

    show_command(
        options.get("--dir"),
        options["positional"][0],
        json_=bool(options.get("--json")),
        store=options.get("--store"),
    )


_early_stop = False


def _stop_early(signum: int, frame: object) -> None:
    global _early_stop
    _early_stop = True


def early_stop_requested() -> bool:
    """A SIGTERM reached `wfl worker` before its own handling was in place."""
    return _early_stop


def main() -> None:
    argv = sys.argv[1:]
    command = argv[0] if argv else ""
    if command == "worker":
        # Loading typer, rich and the worker takes ~190 ms; a SIGTERM in that time must stop
        # the worker cleanly (exit 0) like one a second later, not kill it mid-import.
        import signal

        signal.signal(signal.SIGTERM, _stop_early)
    options = _parse(command, argv[1:]) if command in _FAST else None
    if options is not None and command == "worker":
        from .workercmd import fast_options

        options = fast_options(options)
    if options is not None:
        try:
            if command == "worker":
                _worker(options)
            elif command == "start":
                _start(options)
            elif command == "show":
                _show(options)
            else:
                _status(options)
            return
        except WflError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except BrokenPipeError:
            sys.exit(1)
        except OSError as exc:
            fail(describe_os_error(exc), 2)
    from .cli import main as typer_main

    typer_main()


def describe_os_error(exc: OSError) -> str:
    return f"{exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": ")


def fail(message: str, code: int) -> None:
    if "://" in message:  # a store URL: never print its password
        from .stores import mask

        message = mask(message)
    sys.stderr.write(f"wfl: error: {message}\n")
    sys.exit(code)
