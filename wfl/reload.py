"""A worker's code stays what it loaded: noticing newer code on disk, and `wfl worker --reload`.

A process never re-executes a module it imported (loader.py), so a worker never runs a mix of
old and new code. While it runs, `watch_code` looks at the files it loaded every second: when
they change it logs once that newer code waits and says so in its marker (for `wfl status RUN
--why`); with --reload it stops cleanly instead (running steps get their grace period) and
exits with RELOAD_EXIT, and `supervise`, the parent process, starts a fresh worker, as
uvicorn's reloader does.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from . import codestate, importer

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger(__name__)

RELOAD_EXIT = 3  # a --reload child's "my code changed: start me again"
CHILD_ENV = "WFL_RELOAD_CHILD"
CHECK_EVERY = 1.0  # seconds between looks at the loaded files


async def watch_code(worker: Worker, *, reload: bool) -> bool:
    """Runs beside the worker's loop until canceled; returns True if it stopped the worker
    for a reload."""
    import asyncio

    announced: list[str] = []
    while True:
        await asyncio.sleep(CHECK_EVERY)  # a polling cadence, as uvicorn's StatReload
        changed = await asyncio.get_running_loop().run_in_executor(None, importer.changed_files)
        if changed == announced:
            continue
        announced = changed
        codestate.publish_changed(worker.store.notes, worker._token, changed)
        if not changed:
            continue
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        shown = ", ".join(changed[:3]) + more
        if reload:
            log.warning("code changed (%s): restarting the worker", shown)
            worker.stop()
            return True
        log.warning(
            "newer code waits: %s changed since this worker loaded it; the worker keeps "
            "running the code it loaded until it is restarted (wfl worker --reload restarts "
            "it on changes)",
            shown,
        )


def supervise() -> int:
    """`wfl worker --reload`: run the worker as a child process and start it again each time
    it exits for a code change. SIGTERM and SIGINT go to the child; its exit code is ours."""
    child: subprocess.Popen[bytes] | None = None
    stopping = False

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    from .entry import early_stop_requested

    if early_stop_requested():
        return 0
    env = {**os.environ, CHILD_ENV: "1"}
    command = [sys.executable, "-c", "import sys; from wfl.entry import main; main()"]
    code = 0
    while not stopping:  # (a signal between two children must not start a third)
        child = subprocess.Popen([*command, *sys.argv[1:]], env=env)
        code = child.wait()
        if code != RELOAD_EXIT:
            return code
    return 0 if code == RELOAD_EXIT else code
