"""Workers in the foreground: `wfl worker` (serve) and `wfl run` (drive one run to its end)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from . import live as live_view
from . import render
from .client import Client, result_of
from .entry import early_stop_requested
from .stores.base import Store
from .worker import Worker


def _internal(record: logging.LogRecord) -> bool:
    """wfl's own diagnostics (not the user's step.logger lines under wfl.workflow)."""
    name = record.name
    return (name == "wfl" or name.startswith("wfl.")) and not name.startswith("wfl.workflow")


class _UserLines(logging.Handler):
    """The user's log lines (step.logger, and any logger used inside a step), handed to
    the worker's view so they print with the run id and do not tear a live table."""

    def __init__(self, level: int, sink: Callable[[logging.LogRecord], None]) -> None:
        super().__init__(level)
        self.sink = sink
        self.addFilter(lambda record: not _internal(record))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if getattr(record, "run_id", None) is None:
                from .step import _current

                ctx = _current.get()  # a plain logger called inside a step
                record.run_id = ctx.run_id if ctx is not None else None
            self.sink(record)
        except Exception:
            self.handleError(record)


class _Diagnostics(logging.StreamHandler):  # type: ignore[type-arg]
    """wfl's own lines on stderr, after the event lines of what came before them (which the
    view writes a few ms late, on stdout: a warning that the store is gone printed above
    the lines of steps that started before it)."""

    def __init__(self, before: Callable[[], None] | None) -> None:
        super().__init__(sys.stderr)
        self.before = before

    def emit(self, record: logging.LogRecord) -> None:
        if self.before is not None:
            with contextlib.suppress(Exception):
                self.before()
        super().emit(record)


def setup_logging(
    level: int,
    sink: Callable[[logging.LogRecord], None],
    before: Callable[[], None] | None = None,
) -> None:
    """User lines at `level` and up go to `sink`; wfl's own diagnostics stay on stderr at
    WARNING and up (DEBUG too with --log-level DEBUG), each after calling `before` (the
    view's pending event lines out first)."""
    internal = _Diagnostics(before)
    internal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    internal.setLevel(logging.DEBUG if level <= logging.DEBUG else max(level, logging.WARNING))
    internal.addFilter(_internal)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(internal)
    root.addHandler(_UserLines(level, sink))
    root.setLevel(level)


def serve(
    store: Store,
    *,
    max_parallelism: int,
    once: bool,
    grace: float,
    app_dir: str | None = None,
    reload: bool = False,
    log_level: int = logging.INFO,
) -> None:
    from . import reload as reloader
    from . import share
    from .loader import add_app_dir

    setup = share.child_setup()  # one process of `wfl worker --processes N`
    if reload and not once and not os.environ.get(reloader.CHILD_ENV):
        sys.exit(reloader.supervise())
    if app_dir is not None:
        add_app_dir(app_dir)
    else:
        with contextlib.suppress(OSError):  # a working directory deleted under us: no app dir
            add_app_dir(os.getcwd())
    live = sys.stdout.isatty()
    reporter = share.Reporter(setup.report_fd) if setup is not None else None
    view: live_view.WorkerView
    worker: Worker
    if setup is not None and reporter is not None:
        shared = share.ShareWorker(store, max_parallelism=max_parallelism, grace=grace,
                                   index=setup.index, count=setup.count)  # fmt: skip
        worker = shared
        # on a terminal the supervisor draws the table; else each process writes its lines
        view = (
            share.ReportView(shared, reporter)
            if setup.live
            else live_view.WorkerView(shared, live=False)
        )
    else:
        worker = Worker(store, max_parallelism=max_parallelism, grace=grace)
        view = live_view.WorkerView(worker, live=live)
    worker.on_event = view.on_event
    setup_logging(log_level, view.on_log, getattr(view, "write_pending", None))

    restart = False

    async def main() -> None:
        nonlocal restart
        worker.install_signal_handlers()
        if early_stop_requested():  # SIGTERM came while wfl was still importing
            worker.stop()
        if setup is not None and reporter is not None:
            share.watch_lifeline(worker, setup.lifeline_fd)
            reporter.send({"ready": os.getpid()})
        watcher = asyncio.create_task(reloader.watch_code(worker, reload=reload and not once))
        try:
            await worker.run(once=once)
        finally:
            restart = watcher.done() and not watcher.cancelled() and watcher.result()
            watcher.cancel()

    with view:
        asyncio.run(main())
    if worker.cut_off:
        # Steps still running in threads were recorded as cut off; Python would wait for
        # those threads at exit, so leave now (the journals are already durable).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(reloader.RELOAD_EXIT if restart else 0)
    if restart:
        sys.exit(reloader.RELOAD_EXIT)


def run_in_foreground(
    client: Client, run_id: str, *, live: bool, log_level: int = logging.INFO
) -> Any:
    """Drive `run_id` (and only it, its children and the runs it continues as) until it
    ends; return its result, or the result of the last run of its continue-as-new chain."""
    setup_logging(
        log_level,
        lambda record: render.err_console.print(
            live_view.log_record_line(record), highlight=False, soft_wrap=True
        ),
    )
    worker = Worker(client.store, only={run_id})
    chain = [run_id]

    def finished() -> bool:
        st = client.status(chain[-1])
        if st.finished and st.continued_as:
            chain.append(st.continued_as)  # follow the chain to its end
            return False
        return bool(st.finished)

    def on_event(event: Any) -> None:
        if event.run_id in chain and event.kind != "loaded":
            render.err_console.print(live_view.log_line(event), highlight=False)

    worker.on_event = on_event

    async def main() -> None:
        worker.install_signal_handlers()
        await worker.run(until=finished)

    asyncio.run(main())
    st = client.status(chain[-1])
    if not st.finished:
        raise KeyboardInterrupt
    tb = st.run_state.tb if st.run_state is not None and st.state == "failed" else None
    if tb is not None:  # as Python would print it; the one-line summary follows
        from .tracebacks import format_tb

        sys.stderr.write(format_tb(tb))
        sys.stderr.flush()
    return result_of(st)
