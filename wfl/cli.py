"""The `wfl` command: a thin typer layer over Client and Worker, with one error boundary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from . import jsonout
from .cli_options import DirOption, StoreOption
from .cli_schedule import schedule_app
from .client import Client
from .entry import (
    describe_os_error,
    fail,
    parse_args,
    parse_duration,
    parse_json,
    parse_limit,
    start_run,
)
from .errors import InvalidArguments, WflError

app = typer.Typer(
    help="Durable workflows for Python: start, drive, watch, cancel and clean up runs.",
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
LogLevelOption = Annotated[
    str,
    typer.Option(
        "--log-level", metavar="LEVEL", help="log lines shown: DEBUG INFO WARNING ERROR CRITICAL"
    ),
]


def _client(directory: Path | None, store: str | None) -> Client:
    return Client(directory, store=store)


def _print_json(value: Any) -> None:
    sys.stdout.write(jsonout.dumps(value, indent=2) + "\n")


# -- commands ------------------------------------------------------------------------------


@app.command()
def start(
    flow: Annotated[str, typer.Argument(help="FLOW.py or FLOW.py:WORKFLOW")],
    arg: Annotated[list[str] | None, typer.Option("--arg", help="NAME=VALUE (repeatable)")] = None,
    args_json: Annotated[str | None, typer.Option("--args-json", help="arguments as JSON")] = None,
    on_complete: Annotated[
        str | None, typer.Option("--on-complete", help="FLOW.py:FUNCTION called at the end")
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help="JSON for on_complete")] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="idempotency key: one run per key")
    ] = None,
    deadline: Annotated[
        str | None, typer.Option("--deadline", help="fail the run if unfinished by then: 30m, 1h")
    ] = None,
    dir: DirOption = None,
    store: StoreOption = None,
) -> None:
    """Record a new run and print its id (with --key: the id of the run holding the key)."""
    directory = str(dir) if dir is not None else None
    run_id = start_run(
        flow, arg or [], args_json, on_complete, context, directory, key, deadline, store
    )
    sys.stdout.write(run_id + "\n")


@app.command()
def run(
    flow: Annotated[str, typer.Argument(help="FLOW.py or FLOW.py:WORKFLOW")],
    arg: Annotated[list[str] | None, typer.Option("--arg", help="NAME=VALUE (repeatable)")] = None,
    args_json: Annotated[str | None, typer.Option("--args-json", help="arguments as JSON")] = None,
    log_level: LogLevelOption = "INFO",
    dir: DirOption = None,
    store: StoreOption = None,
) -> None:
    """Start a run and drive it to its end in the foreground; print its result."""
    from .foreground import run_in_foreground
    from .workercmd import parse_level

    level = parse_level(log_level)
    client = _client(dir, store)
    run_id = client.start(flow, parse_args(arg or [], args_json))
    result = run_in_foreground(client, run_id, live=sys.stderr.isatty(), log_level=level)
    sys.stdout.write((result if isinstance(result, str) else jsonout.dumps(result)) + "\n")


@app.command()
def status(
    run: Annotated[str | None, typer.Argument(help="run id (or a unique prefix)")] = None,
    json_: JsonOption = False,
    state: Annotated[str | None, typer.Option("--state", help="only runs in this state")] = None,
    workflow: Annotated[str | None, typer.Option("--workflow", help="only this workflow")] = None,
    limit: Annotated[
        str | None, typer.Option("--limit", metavar="N", help="at most N runs (default: 50)")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="every run (the table shows 50)")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="keep it live until it ends")] = False,
    why: Annotated[bool, typer.Option("--why", help="say what the run waits for")] = False,
    traceback: Annotated[
        bool, typer.Option("--traceback", help="with RUN: every failed attempt's traceback")
    ] = False,
    dir: DirOption = None,
    store: StoreOption = None,
) -> None:
    """Show every run, or one run with its steps."""
    from .views import status_command

    status_command(
        str(dir) if dir is not None else None, run, json_=json_, state=state,
        workflow=workflow, limit=parse_limit(limit), all_=all_, watch=watch, why=why,
        traceback=traceback,
        store=store,
    )  # fmt: skip


@app.command()
def cancel(
    run: Annotated[str, typer.Argument()], dir: DirOption = None, store: StoreOption = None
) -> None:
    """Cancel a run: in-flight steps finish but their results are dropped."""
    client = _client(dir, store)
    run_id = client.resolve(run)
    client.cancel(run_id)
    sys.stdout.write(f"canceled {run_id}\n")


@app.command()
def cleanup(
    run: Annotated[str | None, typer.Argument()] = None,
    finished: Annotated[bool, typer.Option("--finished", help="every finished run")] = False,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="with --finished: e.g. 7d, 12h, 30m")
    ] = None,
    dir: DirOption = None,
    store: StoreOption = None,
) -> None:
    """Delete finished runs' journals."""
    client = _client(dir, store)
    if (run is None) == (not finished):
        raise InvalidArguments("give a RUN or --finished (not both)")
    if older_than is not None and not finished:
        raise InvalidArguments("--older-than goes with --finished")
    if run is not None:
        deleted = client.cleanup(run)
    else:
        age = None
        if older_than is not None:
            age = parse_duration(older_than, "--older-than", positive=False)
        deleted = client.cleanup_finished(older_than=age)
    sys.stdout.write(f"deleted {len(deleted)} run{'s' if len(deleted) != 1 else ''}\n")


@app.command()
def worker(
    max_parallelism: Annotated[
        int,
        typer.Option("--max-parallelism", help="steps executing at once (per process)", min=1),
    ] = 64,
    once: Annotated[bool, typer.Option("--once", help="drain what is due now, then exit")] = False,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes", metavar="N", min=1, help="worker processes (default: one per CPU)"
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option("--grace", help="seconds running steps get to finish on SIGTERM", min=0)
    ] = 10.0,
    app_dir: Annotated[
        str | None,
        typer.Option(
            "--app-dir", help="find runs' modules here first (default: the working directory)"
        ),
    ] = None,
    reload: Annotated[
        bool, typer.Option("--reload", help="restart the worker when its code changes")
    ] = False,
    log_level: LogLevelOption = "INFO",
    dir: DirOption = None,
    store: StoreOption = None,
) -> None:
    """Drive runs: replay due runs, execute steps, sleep until the next timer or new work."""
    from .workercmd import worker_command

    code = worker_command(
        max_parallelism=max_parallelism, once=once, processes=processes, grace=grace,
        app_dir=app_dir, reload=reload, log_level=log_level, dir=dir, store=store,
    )  # fmt: skip
    if code:
        raise typer.Exit(code)


@app.command("send-event")
def send_event(
    run: Annotated[str, typer.Argument()],
    name: Annotated[str, typer.Argument(help="event name")],
    value: Annotated[str | None, typer.Option("--value", help="JSON value")] = None,
    error: Annotated[
        str | None, typer.Option("--error", help="fail the awaiting step with this message")
    ] = None,
    dir: DirOption = None,
    store: StoreOption = None,
) -> None:
    """Deliver an event to a run (buffered until the run awaits it)."""
    client = _client(dir, store)
    if value is not None and error is not None:
        raise InvalidArguments("give --value or --error, not both")
    parsed = parse_json(value, "--value") if value is not None else None
    run_id = client.resolve(run)
    client.send_event(run_id, name, parsed, error=error)
    what = f"{name} (as an error)" if error is not None else name
    sys.stdout.write(f"sent {what} to {run_id}\n")


@app.command()
def restart(
    run: Annotated[str, typer.Argument()],
    from_: Annotated[
        str | None, typer.Option("--from", help="step number or name (default: all)")
    ] = None,
    dir: DirOption = None,
    store: StoreOption = None,
) -> None:
    """Re-run a finished run from a step."""
    client = _client(dir, store)
    run_id = client.resolve(run)
    n = client.restart(run_id, from_)
    sys.stdout.write(f"restarted {run_id} from step {n}\n")


@app.command()
def show(run: Annotated[str, typer.Argument()], json_: JsonOption = False,
         dir: DirOption = None, store: StoreOption = None) -> None:  # fmt: skip
    """The run's journal as a timeline, every record decoded."""
    from .views import show_command

    show_command(str(dir) if dir is not None else None, run, json_=json_, store=store)


@app.command()
def check(
    flow: Annotated[str, typer.Argument(help="FLOW.py")],
    json_: JsonOption = False,
    dir: DirOption = None,
    store: StoreOption = None,
) -> None:
    """Replay unfinished runs of FLOW.py against its current code, executing nothing."""
    from .check import check_flow
    from .loader import load_module

    load_module(flow)  # a flow that does not import is the first thing to report
    results = check_flow(_client(dir, store).store, flow)
    if json_:
        _print_json([r.__dict__ for r in results])
    else:
        for r in results:
            mark = "ok  " if r.ok else "FAIL"
            sys.stdout.write(f"{mark} {r.run_id} {r.workflow}: {r.message}\n")
        broken = sum(1 for r in results if not r.ok)
        sys.stdout.write(f"{len(results)} unfinished runs checked, {broken} would break\n")
    if any(not r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def ui(
    host: Annotated[str, typer.Option("--host", help="address to bind (others need a token)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="port (0: any free one)", min=0)] = 8484,
    store: StoreOption = None,
    dir: DirOption = None,
) -> None:
    """Serve a live web view of the runs (needs: pip install 'wfl[ui]')."""
    from .ui import serve

    serve(store, dir, host=host, port=port)


@app.command()
def migrate(
    from_: Annotated[str, typer.Option("--from", help="the store to copy runs from")],
    to: Annotated[str, typer.Option("--to", help="the store to copy them to")],
    finished: Annotated[bool, typer.Option("--finished", help="only finished runs")] = False,
) -> None:
    """Copy runs from one store to another and verify them; the source is left untouched."""
    from .migrate import migrate as copy_runs
    from .stores import mask, open_store

    source, target = open_store(from_), open_store(to)
    report = copy_runs(source, target, finished_only=finished)
    for problem in report.problems:
        sys.stderr.write(f"wfl: {mask(problem)}\n")
    plural = "run" if report.copied == 1 else "runs"
    sys.stdout.write(
        f"copied {report.copied} {plural} ({report.in_progress} in progress) from "
        f"{source.spec} to {target.spec}, verified; {report.already} already there"
        + (f"; {report.keys} idempotency keys" if report.keys else "")
        + (f"; {report.schedules} schedules copied" if report.schedules else "")
        + "\n"
    )
    if report.problems:
        raise typer.Exit(1)


app.add_typer(schedule_app, name="schedule")


def main() -> None:
    """Runs the typer app with one error boundary (one line on stderr, no traceback)."""
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except WflError as exc:
        fail(str(exc), exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        fail("aborted", 130)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:
        if isinstance(exc, _click_exceptions()):
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `wfl`: the help, as asked
                exc.show()  # type: ignore[attr-defined]
                sys.exit(exc.exit_code)  # type: ignore[attr-defined]
            fail(exc.format_message(), exc.exit_code)  # type: ignore[attr-defined]
        if isinstance(exc, OSError):
            fail(describe_os_error(exc), 2)
        raise


def _click_exceptions() -> tuple[type[Exception], ...]:
    """Usage errors: click's ClickException, which recent typer vendors as typer._click."""
    import importlib

    found: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except ImportError:
            continue
    return tuple(found)
