"""What the read commands print: run lists, one run, timelines, --why, and --watch loops."""

from __future__ import annotations

import time
from typing import Any

from . import ops, render
from .client import Client, RunStatus
from .why import explain

STATES = ("in_progress", "completed", "failed", "canceled")
WATCH_INTERVAL = 0.25


def print_runs(runs: list[RunStatus]) -> None:
    if not runs:
        render.console.print("no runs", style="dim")
        return
    render.console.print(render.runs_table(runs))


def print_run(st: RunStatus) -> None:
    render.console.print(render.run_detail(st, flow_changed=st.flow_changed))


def print_timeline(records: list[dict[str, Any]]) -> None:
    render.console.print(render.timeline(records))


def why(client: Client, run_id: str) -> str:
    state = ops.read_state(client.store, run_id)
    alive = any(True for _ in client.store.worker_tokens())
    return explain(state, client.clock.now(), leased=client.store.is_leased(run_id),
                   workers_alive=alive)  # fmt: skip


def watch_run(client: Client, run_id: str) -> None:
    """Redraw one run until it ends (or Ctrl-C)."""
    from rich.live import Live

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

    with Live(render.runs_table(client.list(**filters)), console=render.console) as live:
        while True:
            _pause()
            live.update(render.runs_table(client.list(**filters)))


def _pause() -> None:
    time.sleep(WATCH_INTERVAL)  # a redraw cadence for a human, not a wait for an event
