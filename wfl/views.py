"""What the read commands print: run lists, one run, timelines, --why, and --watch loops."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any

from . import jsonout, ops
from .client import Client, RunStatus, check_filters
from .errors import InvalidArguments, JournalCorrupt
from .why import explain, explain_code

if TYPE_CHECKING:
    pass

DEFAULT_LIMIT = 50  # runs the table shows unless --limit or --all says otherwise


def status_command(
    directory: str | None,
    run: str | None,
    *,
    json_: bool = False,
    state: str | None = None,
    workflow: str | None = None,
    limit: int | None = None,
    all_: bool = False,
    watch: bool = False,
    why: bool = False,
    traceback: bool = False,
    store: str | None = None,
) -> None:
    """`wfl status`: every run, or one run with its steps (shared by typer and the fast path)."""
    client = Client(directory, store=store)
    try:
        check_filters(state, limit)
    except InvalidArguments as exc:
        raise InvalidArguments(f"--{exc}") from None  # "--state must be one of ..."
    if all_ and limit is not None:
        raise InvalidArguments("give --limit N or --all, not both")
    if run is None:
        if why or traceback:
            raise InvalidArguments(f"{'--why' if why else '--traceback'} needs a RUN")
        _note_stray_files(client)
        filters: dict[str, Any] = {"state": state, "workflow": workflow}
        if json_ or all_ or limit is not None:
            filters["limit"] = limit  # --json lists every run unless --limit says otherwise
            if watch:
                with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops
                    watch_all(client, json_=json_, **filters)
            elif json_:
                print_json([r.to_dict() for r in client.list(**filters)])
            else:
                print_runs(client.list(**filters))
            return
        if watch:
            with contextlib.suppress(KeyboardInterrupt):
                watch_all(client, limit=DEFAULT_LIMIT, **filters)
            return
        runs, total = newest_runs(client, state=state, workflow=workflow, limit=DEFAULT_LIMIT)
        print_runs(runs, more=total - len(runs))
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
            if json_:
                watch_run_json(client, run_id)
            else:
                watch_run(client, run_id)
    elif json_:  # the JSON has every step's and the run's "traceback" anyway
        print_json(client.status(run_id).to_dict())
    else:
        print_run(client.status(run_id))
        if traceback:
            print_tracebacks(client, run_id)


def show_command(
    directory: str | None, run: str, *, json_: bool = False, store: str | None = None
) -> None:
    """`wfl show`: the run's journal as a timeline (shared by typer and the fast path)."""
    client = Client(directory, store=store)
    run_id = client.resolve(run)
    records, damage = readable_records(client, run_id)
    if json_:
        print_json(records)
    else:
        print_timeline(records)
    if damage is not None:  # the good records are shown; then say where the damage starts
        raise damage


def newest_runs(
    client: Client, *, state: str | None, workflow: str | None, limit: int
) -> tuple[list[RunStatus], int]:
    """The newest `limit` runs matching the filters, and how many match in all."""
    if state is None and workflow is None:
        # only the newest journals are looked at; the others are just counted
        return client.list(limit=limit), len(client.store.run_ids())
    matching = client.list(state=state, workflow=workflow)
    return matching[:limit], len(matching)


def _note_stray_files(client: Client) -> None:
    stray = client.store.stray_files()
    if stray:
        shown = ", ".join(stray[:3]) + (", ..." if len(stray) > 3 else "")
        noun = "file is not a run" if len(stray) == 1 else f"{len(stray)} files are not runs"
        sys.stderr.write(
            f"wfl: note: skipped {'this ' if len(stray) == 1 else ''}{noun} "
            f"(its name is no run id): {shown}\n"
        )


def print_json(value: Any) -> None:
    sys.stdout.write(jsonout.dumps(value, indent=2) + "\n")


def print_json_line(value: Any) -> None:
    sys.stdout.write(jsonout.dumps(value) + "\n")
    sys.stdout.flush()  # a reader of the stream sees each change as it happens


WATCH_INTERVAL = 0.25


def print_runs(runs: list[RunStatus], *, more: int = 0) -> None:
    from . import render
    from .bigtable import print_fast

    if not runs:
        render.console.print("no runs", style="dim")
        return
    print_fast(render.console, render.runs_table(runs))
    if more > 0:
        render.console.print(more_line(len(runs), more), style="dim", highlight=False)


def more_line(shown: int, more: int) -> str:
    runs = "run" if more == 1 else "runs"
    return f"... {more:,} more {runs} (newest {shown} shown): --limit N or --all to see them"


def print_run(st: RunStatus) -> None:
    from . import render
    from .bigtable import print_fast

    print_fast(render.console, render.run_detail(st, flow_changed=st.flow_changed))


def print_tracebacks(client: Client, run_id: str) -> None:
    from . import render

    records, _ = readable_records(client, run_id)
    render.console.print()
    render.console.print(render.failure_tracebacks(records), highlight=False)


def print_timeline(records: list[dict[str, Any]]) -> None:
    from . import render
    from .bigtable import print_fast

    print_fast(render.console, render.timeline(records))


def explain_run(client: Client, run_id: str) -> str:
    try:
        state = ops.read_state(client.store, run_id)
    except JournalCorrupt as exc:
        return f"nothing: it failed, its journal is corrupt at byte {exc.offset} ({exc.path})"
    alive = client.store.workers_alive()
    sentence = explain(state, client.clock.now(), leased=client.store.is_leased(run_id),
                       workers_alive=alive)  # fmt: skip
    return explain_code(client.store.notes, state, sentence)


def readable_records(
    client: Client, run_id: str
) -> tuple[list[dict[str, Any]], JournalCorrupt | None]:
    """The run's records; for a corrupt journal, the good ones before the damage and why."""
    return client.store.read_damaged(run_id)


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


def watch_run_json(client: Client, run_id: str) -> None:
    """One JSON document per line each time the run changes, until it ends (or Ctrl-C)."""
    last: dict[str, Any] | None = None
    while True:
        st = client.status(run_id)
        doc = st.to_dict()
        if doc != last:
            print_json_line(doc)
            last = doc
        if st.finished:
            return
        _pause()


def watch_all(client: Client, *, json_: bool = False, **filters: Any) -> None:
    """Redraw the run table (or, with json_, print the list as one JSON line whenever it
    changes) until Ctrl-C."""
    if json_:
        _watch_all_json(client, **filters)
        return
    from rich.live import Live

    from . import render

    with Live(render.runs_table(client.list(**filters)), console=render.console) as live:
        while True:
            _pause()
            live.update(render.runs_table(client.list(**filters)))


def _watch_all_json(client: Client, **filters: Any) -> None:
    last: list[dict[str, Any]] | None = None
    while True:
        doc = [r.to_dict() for r in client.list(**filters)]
        if doc != last:
            print_json_line(doc)
            last = doc
        _pause()


def _pause() -> None:
    time.sleep(WATCH_INTERVAL)  # a redraw cadence for a human, not a wait for an event
