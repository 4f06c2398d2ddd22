"""What the read commands print: run lists, one run, timelines, --why, and --watch loops."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from . import journal, ops
from .client import Client, RunStatus
from .errors import InvalidArguments, JournalCorrupt
from .why import explain

if TYPE_CHECKING:
    pass

STATES = ("in_progress", "completed", "failed", "canceled")


def status_command(
    directory: str | None,
    run: str | None,
    *,
    json_: bool = False,
    state: str | None = None,
    workflow: str | None = None,
    limit: int | None = None,
    watch: bool = False,
    why: bool = False,
) -> None:
    """`wfl status`: every run, or one run with its steps (shared by typer and the fast path)."""
    client = Client(directory)
    if state is not None and state not in STATES:
        raise InvalidArguments(f"--state must be one of {', '.join(STATES)}")
    if run is None:
        if why:
            raise InvalidArguments("--why needs a RUN")
        if watch:
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops watching
                watch_all(client, state=state, workflow=workflow, limit=limit)
        elif json_:
            runs = client.list(state=state, workflow=workflow, limit=limit)
            print_json([r.to_dict() for r in runs])
        else:
            print_runs(client.list(state=state, workflow=workflow, limit=limit))
        return
    run_id = client.resolve(run)
    if why:
        sentence = explain_run(client, run_id)
        if json_:
            print_json({"id": run_id, "why": sentence})
        else:
            sys.stdout.write(sentence + "\n")
    elif watch:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops watching
            watch_run(client, run_id)
    elif json_:
        print_json(client.status(run_id).to_dict())
    else:
        print_run(client.status(run_id))


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=repr) + "\n")


WATCH_INTERVAL = 0.25


def print_runs(runs: list[RunStatus]) -> None:
    from . import render

    if not runs:
        render.console.print("no runs", style="dim")
        return
    render.console.print(render.runs_table(runs))


def print_run(st: RunStatus) -> None:
    from . import render

    render.console.print(render.run_detail(st, flow_changed=st.flow_changed))


def print_timeline(records: list[dict[str, Any]]) -> None:
    from . import render

    render.console.print(render.timeline(records))


def explain_run(client: Client, run_id: str) -> str:
    try:
        state = ops.read_state(client.store, run_id)
    except JournalCorrupt as exc:
        return f"nothing: it failed, its journal is corrupt at byte {exc.offset} ({exc.path})"
    alive = any(True for _ in client.store.worker_tokens())
    return explain(state, client.clock.now(), leased=client.store.is_leased(run_id),
                   workers_alive=alive)  # fmt: skip


def readable_records(
    client: Client, run_id: str
) -> tuple[list[dict[str, Any]], JournalCorrupt | None]:
    """The run's records; for a corrupt journal, the good ones before the damage and why."""
    try:
        return client.store.read(run_id), None
    except JournalCorrupt as exc:
        data = client.store.journal_path(run_id).read_bytes()[: exc.offset]
        try:
            good = journal.parse(data, start=len(journal.MAGIC), path=exc.path).records
        except JournalCorrupt:
            good = []
        return good, exc


def watch_run(client: Client, run_id: str) -> None:
    """Redraw one run until it ends (or Ctrl-C)."""
    from rich.live import Live

    from . import render

    with Live(render.run_detail(client.status(run_id)), console=render.console) as live:
        while True:
            st = client.status(run_id)
            live.update(render.run_detail(st))
            if st.finished:
                return
            _pause()


def watch_all(client: Client, **filters: Any) -> None:
    """Redraw the run table until Ctrl-C."""
    from rich.live import Live

    from . import render

    with Live(render.runs_table(client.list(**filters)), console=render.console) as live:
        while True:
            _pause()
            live.update(render.runs_table(client.list(**filters)))


def _pause() -> None:
    time.sleep(WATCH_INTERVAL)  # a redraw cadence for a human, not a wait for an event
