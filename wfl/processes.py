"""`wfl worker --processes N`: a supervisor process and N worker processes (wfl/share.py).

The supervisor executes nothing and imports no flow: it starts N children (`wfl worker` again,
with the same options, told their place in CHILD_ENV; each loads flows itself, nothing is
pickled), forwards SIGTERM/SIGINT to them (as SIGTERM: each stops taking work, lets running
steps finish within --grace and exits 0), and keeps them running:

- a child that dies (a signal, an exit it was not asked for) is started again with a log line;
  at once if it had served HEALTHY_AFTER seconds, else after a backoff that doubles up to
  RESTART_MAX, so a child that cannot stay up does not spin. Its runs meanwhile: their leases
  ended with it, and siblings take them after share.SHARE_DELAY.
- a child that exits non-zero before it served (bad options, a store it cannot open...), or
  any child of `--once` that exits non-zero, is an error for the whole worker: the others are
  stopped and the supervisor exits with that code (its one stderr line shown once).
- `--once`: each child drains its share, then the supervisor looks at the store: if anything
  is still due now (a run a sibling held when another looked, a run a sibling's run made due
  as it exited), one child drains the rest as `--processes 1 --once` would.

Children report over a pipe each, in JSON lines: `ready`, and on a terminal their table's rows
and counts (wfl/live.py's WholeView draws one table for the whole worker), recent events and
user log lines. Off a terminal a child writes its own event lines to the shared stdout, one
write per line, as one worker does. Children's stderr passes through the supervisor so that
the same line from each child (a store that is down) is shown once.

A lifeline pipe (its write end held only by the supervisor) tells children that the supervisor
died, even by SIGKILL: they stop cleanly. This module stays light (no worker, no rich unless
on a terminal): the supervisor starts fast and its children start at once.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .live import WholeView
    from .stores.base import Store

CHILD_ENV = "WFL_WORKER_PROCESS"  # "index,count,report fd,lifeline fd,live" in a child
RELOAD_EXIT = 3  # a --reload child's "my code changed: start me again" (reload.RELOAD_EXIT)
HEALTHY_AFTER = 10.0  # a child that served this long is restarted at once when it dies
RESTART_FIRST = 0.5  # then: seconds before restarting a child that died young, doubling
RESTART_MAX = 30.0
KILL_AFTER = 5.0  # beyond --grace: a child still running then is killed (its journals are
# durable; a step cut off is recorded as such by the next holder)
SAME_LINE = 2.0  # seconds within which one stderr line from several children is shown once


@dataclass
class _Child:
    slot: int  # which share (0..count-1)
    serial: int  # which start, for the live view
    proc: subprocess.Popen[bytes]
    report: int  # read end of its report pipe
    started: float
    ready: bool = False
    buffers: dict[int, bytes] = field(default_factory=dict)  # fd -> an unfinished line
    closed: set[int] = field(default_factory=set)  # fds at their end (unregistered)


@dataclass
class _Slot:
    index: int
    count: int
    child: _Child | None = None
    restart_at: float | None = None
    backoff: float = RESTART_FIRST
    done: bool = False  # --once: drained its share and exited 0


class Supervisor:
    def __init__(
        self,
        count: int,
        argv: list[str],
        *,
        once: bool,
        grace: float,
        live: bool,
        store: Store,
    ) -> None:
        self.count = count
        self.argv = argv  # the child's `wfl worker ...` options
        self.once = once
        self.grace = grace
        self.live = live
        self.store = store  # opened (connected) only by --once's last look
        self.view: WholeView | None = None
        self.stopping = False
        self.kill_at: float | None = None
        self.code = 0  # the exit code so far
        self.fatal = False
        self._serials = 0
        self._said: dict[str, tuple[int, float]] = {}  # stderr line -> (child, when)
        self._signals: list[int] = []
        self.sel = selectors.DefaultSelector()

    # -- the whole life --------------------------------------------------------------------

    def run(self) -> int:
        from .entry import early_stop_requested

        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)  # (a full pipe wakes too)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() through the wake fd
        self.sel.register(wake_r, selectors.EVENT_READ, None)
        if early_stop_requested():  # SIGTERM came while wfl was still importing
            return 0
        self.lifeline_r, self.lifeline_w = os.pipe()
        if self.live:
            from .live import WholeView

            self.view = WholeView()
            self.view.__enter__()
        try:
            self._round(self.count)
            if self.once and not self.stopping and not self.fatal and self._due_left():
                if self.view is not None:
                    self.view.new_round()
                self._round(1)  # the rest, as one `--once` process would drain it
        finally:
            if self.view is not None:
                self.view.__exit__(None, None, None)
            os.close(self.lifeline_w)
            os.close(self.lifeline_r)
        return self.code

    def _round(self, count: int) -> None:
        slots = [_Slot(i, count) for i in range(count)]
        for slot in slots:
            self._start(slot)
        while True:
            running = [s for s in slots if s.child is not None]
            if not running and (self.stopping or all(s.done for s in slots)):
                return
            now = time.monotonic()
            waits = [s.restart_at for s in slots if s.child is None and s.restart_at]
            if self.kill_at is not None:
                waits.append(self.kill_at)
            timeout = max(0.0, min(waits) - now) if waits else None
            for key, _ in self.sel.select(timeout):
                if key.data is None:
                    self._drain_wakeups(key.fd)
                else:
                    self._read(key.data, key.fd)
            self._take_signals(slots)
            for slot in slots:
                if slot.child is not None and slot.child.proc.poll() is not None:
                    self._exited(slot, slots)
            now = time.monotonic()
            for slot in slots:
                due = slot.restart_at is not None and slot.restart_at <= now
                if slot.child is None and due and not self.stopping:
                    self._start(slot)
            if self.kill_at is not None and now >= self.kill_at:
                self.kill_at = None
                for s in slots:
                    if s.child is not None and s.child.proc.poll() is None:
                        self._say(f"worker process {s.index} (pid {s.child.proc.pid}) did not "
                                  f"stop within the grace period: killed")  # fmt: skip
                        s.child.proc.kill()
                        self.code = self.code or 1

    # -- children --------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        slot.restart_at = None
        report_r, report_w = os.pipe()
        live = "1" if self.live else "0"
        env = {
            **os.environ,
            CHILD_ENV: f"{slot.index},{slot.count},{report_w},{self.lifeline_r},{live}",
            "WFL_RELOAD_CHILD": "1",  # --reload: the child restarts itself through us
        }
        command = [sys.executable, "-c", "from wfl.entry import main; main()", *self.argv]
        if self.once:
            command.append("--once")
        proc = subprocess.Popen(
            command,
            env=env,
            pass_fds=(report_w, self.lifeline_r),
            stdout=subprocess.PIPE if self.live else None,
            stderr=subprocess.PIPE,
            # signals reach children through the supervisor only (a Ctrl-C in the terminal
            # too), so each gets one SIGTERM and the supervisor knows it is stopping
            process_group=0,
        )
        os.close(report_w)
        self._serials += 1
        child = _Child(slot.index, self._serials, proc, report_r, time.monotonic())
        slot.child = child
        for fd in self._fds(child):
            os.set_blocking(fd, False)
            self.sel.register(fd, selectors.EVENT_READ, child)

    def _fds(self, child: _Child) -> list[int]:
        fds = [child.report]
        for stream in (child.proc.stdout, child.proc.stderr):
            if stream is not None:
                fds.append(stream.fileno())
        return fds

    def _exited(self, slot: _Slot, slots: list[_Slot]) -> None:
        child = slot.child
        assert child is not None
        for fd in self._fds(child):  # what it wrote before it exited
            if fd not in child.closed:
                self._read(child, fd, last=True)
            if fd not in child.closed:  # (a process it started may hold the pipe open)
                self.sel.unregister(fd)
        os.close(child.report)
        for stream in (child.proc.stdout, child.proc.stderr):
            if stream is not None:
                stream.close()
        code = child.proc.returncode
        if self.view is not None:
            self.view.exited(child.serial, final=self.stopping or (self.once and code == 0))
        slot.child = None
        if self.stopping:
            # (killed by our SIGTERM before it could take it: a clean stop too; one killed
            # after the grace period has set the code already)
            if code > 0 and not self.code:
                self.code = code
            return
        if code == 0 and self.once:
            slot.done = True
            return
        if code == RELOAD_EXIT:  # --reload: its code changed, it stopped cleanly
            slot.restart_at = time.monotonic()
            return
        if code > 0 and (self.once or not child.ready):
            self.fatal = True  # the child said why on stderr (shown once)
            self.code = code
            self._stop(slots)
            return
        lived = time.monotonic() - child.started
        delay = 0.0 if lived >= HEALTHY_AFTER else slot.backoff
        slot.backoff = (
            RESTART_FIRST if lived >= HEALTHY_AFTER else min(slot.backoff * 2, RESTART_MAX)
        )
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        later = f" in {delay:g} s" if delay else ""
        self._say(f"worker process {slot.index} (pid {child.proc.pid}) {how}; restarting it{later}")
        slot.restart_at = time.monotonic() + delay

    # -- signals ---------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.append(signum)

    def _drain_wakeups(self, fd: int) -> None:
        try:
            while os.read(fd, 512):
                pass
        except BlockingIOError:
            pass

    def _take_signals(self, slots: list[_Slot]) -> None:
        if not self._signals:
            return
        self._signals.clear()
        self._stop(slots)  # a second Ctrl-C is forwarded again, as one worker takes it

    def _stop(self, slots: list[_Slot]) -> None:
        if not self.stopping:
            self.stopping = True
            self.kill_at = time.monotonic() + self.grace + KILL_AFTER
        for slot in slots:
            slot.restart_at = None
            if slot.child is not None and slot.child.proc.poll() is None:
                slot.child.proc.send_signal(signal.SIGTERM)

    # -- what children say -----------------------------------------------------------------

    def _read(self, child: _Child, fd: int, *, last: bool = False) -> None:
        """Read what is there (all of it, `last`: the child has exited) and handle each
        whole line; a pipe at its end is unregistered (it would select as readable forever)."""
        chunks = [child.buffers.pop(fd, b"")]
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    if fd not in child.closed:
                        child.closed.add(fd)
                        self.sel.unregister(fd)
                    last = True
                    break
                chunks.append(data)
                if not last:
                    break
        except OSError:  # EAGAIN: nothing more for now
            pass
        lines = b"".join(chunks).split(b"\n")
        rest = lines.pop()
        if not last:
            child.buffers[fd] = rest
        elif rest:
            lines.append(rest)
        for line in lines:
            self._line(child, fd, line.decode(errors="replace"))

    def _line(self, child: _Child, fd: int, line: str) -> None:
        if fd == child.report:
            try:
                message = json.loads(line)
            except ValueError:
                return
            self._message(child, message)
        elif child.proc.stdout is not None and fd == child.proc.stdout.fileno():
            self._show(line, err=False)  # a step's print(): above the live table
        else:
            now = time.monotonic()
            said = self._said.get(line)
            if said is not None and said[0] != child.serial and now - said[1] < SAME_LINE:
                return  # the same line from another child: shown once
            self._said = {k: v for k, v in self._said.items() if now - v[1] < SAME_LINE}
            self._said[line] = (child.serial, now)
            self._show(line, err=True)

    def _message(self, child: _Child, message: dict[str, Any]) -> None:
        if "ready" in message:
            child.ready = True
        elif self.view is None:
            return
        elif "snapshot" in message:
            self.view.update(child.serial, message["snapshot"])
        elif "event" in message:
            self.view.event(message["event"])
        elif "print" in message:
            self.view.print(str(message["print"]), str(message.get("style") or ""))

    def _show(self, line: str, *, err: bool) -> None:
        if self.view is not None:
            self.view.print(line)
            return
        out = sys.stderr if err else sys.stdout
        out.write(line + "\n")
        out.flush()

    def _say(self, message: str) -> None:
        self._show(f"WARNING wfl.processes: {message}", err=True)

    # -- --once ----------------------------------------------------------------------------

    def _due_left(self) -> bool:
        """Whether any unfinished run is due now (its next wake has come)."""
        try:
            now = time.time()
            for s in self.store.summaries():
                state = s.status.get("state")
                wake = s.wake_at
                if not s.broken and state == "in_progress" and wake is not None and wake <= now:
                    return True
            return False
        finally:
            self.store.close()


def supervise(
    count: int,
    argv: list[str],
    *,
    once: bool,
    grace: float,
    store: Store,
) -> int:
    live = sys.stdout.isatty()
    return Supervisor(count, argv, once=once, grace=grace, live=live, store=store).run()
