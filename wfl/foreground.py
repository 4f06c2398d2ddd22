"""Workers in the foreground: `wfl worker` (serve) and `wfl run` (drive one run to its end)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from . import render
from .client import Client, result_of
from .entry import early_stop_requested
from .worker import Worker


def serve(
    directory: Path | None,
    *,
    max_parallelism: int,
    once: bool,
    grace: float,
    app_dir: str | None = None,
    reload: bool = False,
) -> None:
    from . import reload as reloader
    from .loader import add_app_dir

    if reload and not once and not os.environ.get(reloader.CHILD_ENV):
        sys.exit(reloader.supervise())
    if app_dir is not None:
        add_app_dir(app_dir)
    else:
        with contextlib.suppress(OSError):  # a working directory deleted under us: no app dir
            add_app_dir(os.getcwd())
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    live = sys.stdout.isatty()
    worker = Worker(directory, max_parallelism=max_parallelism, grace=grace)
    view = render.WorkerView(worker, live=live)
    worker.on_event = view.on_event

    restart = False

    async def main() -> None:
        nonlocal restart
        worker.install_signal_handlers()
        if early_stop_requested():  # SIGTERM came while wfl was still importing
            worker.stop()
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


def run_in_foreground(client: Client, run_id: str, *, live: bool) -> Any:
    """Drive `run_id` (and only it, its children and the runs it continues as) until it
    ends; return its result, or the result of the last run of its continue-as-new chain."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
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
            render.err_console.print(render.log_line(event), highlight=False)

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
