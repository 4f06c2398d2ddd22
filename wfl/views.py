"""What the read commands print: run lists, one run, timelines, --why, and --watch loops."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any

from . import jsonout
from .errors import InvalidArguments, JournalCorrupt

if TYPE_CHECKING:
    from .client import Client, RunStatus
    from .index import RunSummary

# The list views import neither the client nor rich (`wfl status` on 10,000 runs has 200 ms,
# interpreter start included): the runs come from the index, the table from runlist.

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
    from .index import check_filters
    from .stores import open_store

    opened = open_store(store, dir=directory)
    try:
        check_filters(state, limit)
    except InvalidArguments as exc:
        raise InvalidArguments(f"--{exc}") from None  # "--state must be one of ..."
    if all_ and limit is not None:
        raise InvalidArguments("give --limit N or --all, not both")
    if run is None:
        if why or traceback:
            raise InvalidArguments(f"{'--why' if why else '--traceback'} needs a RUN")
        filters: dict[str, Any] = {"state": state, "workflow": workflow}
        if watch:
            client = _client(opened)
            _note_stray_files(opened.stray_files())
            if not (json_ or all_ or limit is not None):
                filters["limit"] = DEFAULT_LIMIT
            else:
                filters["limit"] = limit  # --json lists every run unless --limit says otherwise
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops
                watch_all(client, json_=json_, **filters)
            return
        from .index import survey, survey_json

        if json_ and state is None and workflow is None:
            sys.stdout.write(survey_json(opened, limit=limit, on_stray=_note_stray_files) + "\n")
            return
        every = json_ or all_ or limit is not None  # else the newest 50 and "N more"
        runs, total = survey(opened, **filters, limit=limit if every else DEFAULT_LIMIT,
                             on_stray=_note_stray_files)  # fmt: skip
        if json_:
            print_json([s.status for s in runs])  # (RunStatus.to_dict() of a listed run)
        else:
            print_runs(runs, more=0 if every else total - len(runs))
        return
    client = _client(opened)
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


def _client(store: Any) -> Client:
    from .client import Client

    return Client(store=store)


def show_command(
    directory: str | None, run: str, *, json_: bool = False, store: str | None = None
) -> None:
    """`wfl show`: the run's journal as a timeline (shared by typer and the fast path)."""
    from .client import Client

    client = Client(directory, store=store)
    run_id = client.resolve(run)
    records, damage = readable_records(client, run_id)
    if json_:
        print_json(records)
    else:
        print_timeline(records)
    if damage is not None:  # the good records are shown; then say where the damage starts
        raise damage


def _note_stray_files(stray: list[str]) -> None:
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


def print_runs(runs: list[RunSummary], *, more: int = 0) -> None:
    from . import runlist

    now = time.time()
    rows = [runlist.row(s.status, (s.steps_done, s.steps_total, s.current), now) for s in runs]
    if runlist.plain_stdout():  # what rich would print here, without importing it
        lines = runlist.plain_lines(rows) if rows else ["no runs"]
        if lines is not None:
            if more > 0:
                lines.append(more_line(len(runs), more))
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
            return
    from . import render
    from .bigtable import print_fast

    if not runs:
        render.console.print("no runs", style="dim")
        return
    print_fast(render.console, render.runs_table(rows))
    if more > 0:
        render.console.print(more_line(len(runs), more), style="dim", highlight=False)


def status_rows(runs: list[RunStatus]) -> list[list[str]]:
    from . import runlist

    now = time.time()
    return [runlist.row(st.to_dict(), st.step_counts, now) for st in runs]


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
    from . import ops
    from .why import explain, explain_code

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

    def table() -> Any:
        return render.runs_table(status_rows(client.list(**filters)))

    with Live(table(), console=render.console) as live:
        while True:
            _pause()
            live.update(table())


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
