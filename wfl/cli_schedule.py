"""`wfl schedule add|list|pause|resume|remove|trigger`: schedules from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .cli_options import DirOption, StoreOption
from .client import Client
from .entry import parse_args

schedule_app = typer.Typer(
    help="Start a workflow at every slot of a cron expression (any running worker fires it).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="schedule name")]


def _client(directory: Path | None, store: str | None) -> Client:
    return Client(directory, store=store)


@schedule_app.command("add")
def add(
    name: NameArg,
    flow: Annotated[str, typer.Argument(help="FLOW.py or FLOW.py:WORKFLOW")],
    cron: Annotated[str, typer.Option("--cron", help='cron expression, e.g. "0 9 * * MON"')],
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of the cron")] = "UTC",
    arg: Annotated[list[str] | None, typer.Option("--arg", help="NAME=VALUE (repeatable)")] = None,
    args_json: Annotated[str | None, typer.Option("--args-json", help="arguments as JSON")] = None,
    overlap: Annotated[
        str, typer.Option("--overlap", help="skip: no new run while the last one goes; allow")
    ] = "skip",
    catch_up: Annotated[
        str,
        typer.Option("--catch-up", help="slots missed while no worker ran: last, all or none"),
    ] = "last",
    dir: DirOption = None,
    store: StoreOption = None,
) -> None:
    """Add a schedule; prints its next fire time."""
    from . import schedules
    from .store import check_schedule_name

    # the cheap checks first: a typo in --cron costs no import of the flow
    check_schedule_name(name)
    schedules.check_cron(cron)
    schedules.zone(tz)
    added = _client(dir, store).add_schedule(
        name, flow, cron=cron, tz=tz, args=parse_args(arg or [], args_json), overlap=overlap,
        catch_up=catch_up,
    )  # fmt: skip
    from datetime import datetime

    nxt = datetime.fromisoformat(added["next_fire_at"]).astimezone(schedules.zone(tz))
    sys.stdout.write(f"added schedule {name}: next run {nxt.strftime('%Y-%m-%d %H:%M %Z')}\n")


@schedule_app.command("list")
def list_(
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    dir: DirOption = None,
    store: StoreOption = None,
) -> None:
    """Every schedule: workflow, cron, zone, next fire time, last run and its state, paused."""
    rows = _client(dir, store).list_schedules()
    if json_:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    from . import render

    if not rows:
        render.console.print("no schedules", style="dim")
        return
    render.console.print(render.schedules_table(rows))


@schedule_app.command("pause")
def pause(name: NameArg, dir: DirOption = None, store: StoreOption = None) -> None:
    """Stop firing (until resumed)."""
    _client(dir, store).pause_schedule(name)
    sys.stdout.write(f"paused schedule {name}\n")


@schedule_app.command("resume")
def resume(name: NameArg, dir: DirOption = None, store: StoreOption = None) -> None:
    """Fire again from the next slot on (slots passed while paused are not fired)."""
    _client(dir, store).resume_schedule(name)
    sys.stdout.write(f"resumed schedule {name}\n")


@schedule_app.command("remove")
def remove(name: NameArg, dir: DirOption = None, store: StoreOption = None) -> None:
    """Delete the schedule (the runs it started stay)."""
    _client(dir, store).remove_schedule(name)
    sys.stdout.write(f"removed schedule {name}\n")


@schedule_app.command("trigger")
def trigger(name: NameArg, dir: DirOption = None, store: StoreOption = None) -> None:
    """Start the schedule's workflow now; prints the run id."""
    sys.stdout.write(_client(dir, store).trigger_schedule(name) + "\n")
