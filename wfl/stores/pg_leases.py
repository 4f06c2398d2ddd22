"""Leases in PostgreSQL: session advisory locks held by a worker's session connection (see
postgres.py: the connection that writes is the one that holds them, so a commit proves the
lease). Mixed into PostgresStore.

Three shortcuts keep lease traffic off a worker's event loop, where every call would otherwise
wait behind the session's group commit in flight: a run another worker holds is asked for
again (every second or so, in case that worker died) against one look at pg_locks per
HELD_FRESH s on the reads connection; a lease released while the session is busy is unlocked
by whoever holds the session, when it is done (at once, or a commit later); and a worker's
attempt on a new run while the session is busy (lease_soon) is queued: one lease thread makes
every attempt queued by then in one round trip as soon as the commit lets go of the session,
and hands each outcome to the worker's callback. (Before, the loop waited ~1-3 ms for the
commit each time: a quarter of a worker's time with 2 workers racing for every new run.)
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any

from wfl.errors import StoreUnavailable
from wfl.store import check_id
from wfl.stores.base import LeasePending

if TYPE_CHECKING:
    import psycopg

MAX_CONTESTED = 100_000
RECENT_RUNS = 1024  # runs whose rows a read keeps for a lease attempt soon after...
RECENT_ROWS = 256  # ...if they have at most this many records...
RECENT_BYTES = 64 * 1024  # ...and bytes
HELD_FRESH = 0.2  # seconds a look at the held advisory locks answers contested leases


def lock_key(run_id: str) -> int:
    """The advisory lock key of a run (64 bits of a hash: collisions are negligible)."""
    digest = hashlib.blake2b(run_id.encode(), digest_size=8, person=b"wfl-lease").digest()
    return int.from_bytes(digest, "big", signed=True)


class Leases:
    """Mixed into PostgresStore; needs its session lock, session(), reads() and generation."""

    _lock: threading.RLock
    _conn: psycopg.Connection[Any] | None
    generation: int

    def session(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError

    def reads(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError

    def init_leases(self) -> None:
        self._leases: dict[str, int] = {}  # run id -> generation it was leased in
        self._contested: set[str] = set()  # runs another worker held when we asked
        self._held: set[int] = set()  # advisory lock keys held HELD_FRESH s ago...
        self._held_at = -HELD_FRESH  # ...as of this time.monotonic()
        self._unlocks: list[tuple[int, int]] = []  # (key, generation) to unlock
        self._recent: dict[str, Known] = {}  # rows of runs read lately, their record count
        self._fresh: dict[str, tuple[int, list[tuple[int, bytes]]]] = {}  # read when leased
        self._unlocks_lock = threading.Lock()
        # lease attempts waiting for the session (lease_soon): run id -> whom to tell
        self._attempts: dict[str, Callable[[LeaseOutcome], None]] = {}
        self._attempts_lock = threading.Lock()
        self._serving = False  # a turn of the lease thread is on its way (under _attempts_lock)
        self._lease_thread: ThreadPoolExecutor | None = None

    def lease_soon(
        self, run_id: str, then: Callable[[LeaseOutcome], None]
    ) -> PgLease | LeasePending | None:
        """try_lease without waiting for the session: at once if it is free (or the run is
        known to be held elsewhere), else PENDING and `then` gets the outcome (a lease, None,
        or the exception the attempt met) from the lease thread once the session's user lets
        go (it must not block: hand it to the event loop)."""
        if run_id in self._contested and self._held_elsewhere(lock_key(run_id)):
            return None
        with self._attempts_lock:
            if run_id in self._attempts:
                return PENDING  # (asked twice: the first `then` gets the outcome)
        if self._lock.acquire(blocking=False):
            try:
                return self.try_lease(run_id)
            finally:
                self._lock.release()
        with self._attempts_lock:
            self._attempts[run_id] = then
            if self._serving:
                return PENDING
            self._serving = True
            if self._lease_thread is None:
                self._lease_thread = ThreadPoolExecutor(1, thread_name_prefix="wfl-lease")
            pool = self._lease_thread
        pool.submit(self._serve_attempts)
        return PENDING

    def _serve_attempts(self) -> None:
        """(the lease thread) Every queued attempt in one round trip, once the session is ours."""
        outcomes: dict[str, LeaseOutcome] = {}
        batch: dict[str, Callable[[LeaseOutcome], None]] = {}
        try:
            with self.session() as conn:
                with self._attempts_lock:  # what came while we waited for the session too
                    batch, self._attempts = self._attempts, {}
                    self._serving = False
                outcomes.update(self._attempt_many(conn, list(batch)))
        except BaseException as exc:
            with self._attempts_lock:
                if not batch:
                    batch, self._attempts = self._attempts, {}
                self._serving = False
            for run_id in batch:
                outcomes.setdefault(run_id, exc)
        for run_id, then in batch.items():
            try:
                then(outcomes[run_id])
            except Exception:  # (the worker's loop is gone) the lease is not needed
                outcome = outcomes[run_id]
                if isinstance(outcome, PgLease):
                    outcome.release()

    def _attempt_many(
        self, conn: psycopg.Connection[Any], run_ids: list[str]
    ) -> dict[str, LeaseOutcome]:
        """Lock and read each run (under the session, as try_lease does), in one round trip."""
        items = [(lock_key(r), r, self._recent.pop(r, None)) for r in run_ids]
        try:
            results = lock_and_read_many(conn, items)
        except Exception:
            if not conn.broken:  # as in try_lease: unlock what the failed query may have taken
                for key, run_id, _ in items:
                    if run_id not in self._leases:
                        with suppress(Exception):
                            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            raise
        out: dict[str, LeaseOutcome] = {}
        for (key, run_id, _), (got, rows) in zip(items, results, strict=True):
            if not got:
                self._contest(run_id)
                out[run_id] = None
            elif run_id in self._leases:  # session locks nest: keep one level only
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                out[run_id] = None
            else:
                self._contested.discard(run_id)
                self._leases[run_id] = self.generation
                if rows is not None:
                    self._fresh[run_id] = (self.generation, rows)
                out[run_id] = PgLease(self, run_id, self.generation)
        return out

    def try_lease(self, run_id: str) -> PgLease | None:
        """The run's lease, or None if another session holds it. The lock attempt also
        reads the run's records (see lock_and_read): the writer's read_all() then costs no
        second round trip, which a worker would wait for on its event loop."""
        key = lock_key(run_id)
        if run_id in self._contested and self._held_elsewhere(key):
            return None
        self._contested.discard(run_id)
        if self._taken_elsewhere(key):
            self._contest(run_id)
            return None
        known = self._recent.pop(run_id, None)
        with self.session() as conn:
            try:
                got, rows = lock_and_read(conn, key, run_id, known)
            except Exception:
                # a statement failed, the connection lives: the lock may have been taken
                # (session locks outlast the failed transaction); unlocking one we do not
                # hold only warns
                if run_id not in self._leases and not conn.broken:
                    with suppress(Exception):
                        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                raise
            if not got:
                self._contest(run_id)
                return None
            if run_id in self._leases:  # session locks nest: keep one level only
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                return None
            self._leases[run_id] = self.generation
            if rows is not None:
                self._fresh[run_id] = (self.generation, rows)
            return PgLease(self, run_id, self.generation)

    def _contest(self, run_id: str) -> None:
        if len(self._contested) > MAX_CONTESTED:
            self._contested.clear()  # only a shortcut: forgetting costs a wait
        self._contested.add(run_id)

    def _taken_elsewhere(self, key: int) -> bool:
        """Whether another session holds lock `key`, asked on the reads connection when the
        session is busy (a commit in flight, which the attempt would wait behind): the run
        of a new run's news that another worker took first costs no wait then. A lock
        that is free is not held on to (the attempt on the session takes it)."""
        if not self._lock.acquire(blocking=False):
            with self.reads() as conn:
                row = conn.execute(
                    "SELECT CASE WHEN pg_try_advisory_lock(%s) THEN NOT pg_advisory_unlock(%s) "
                    "ELSE true END",
                    (key, key),
                ).fetchone()
            return bool(row and row[0])
        self._lock.release()
        return False

    def remember(self, run_id: str, rows: list[tuple[int, bytes]], count: int) -> None:
        """Rows of `run_id` just read (PostgresStore.read), holding `count` records: a lease
        attempt soon after need only fetch what came after them (a worker reads a run it
        hears of, then leases it)."""
        if len(rows) > RECENT_ROWS or sum(len(data) for _, data in rows) > RECENT_BYTES:
            return  # a big run: read again (memory stays bounded: RECENT_RUNS x RECENT_BYTES)
        if len(self._recent) >= RECENT_RUNS:
            with suppress(KeyError, StopIteration, RuntimeError):  # (another thread's pop)
                del self._recent[next(iter(self._recent))]
        self._recent[run_id] = (rows, count)

    def take_fresh(self, run_id: str, generation: int) -> list[tuple[int, bytes]] | None:
        """The rows read when the lease in `generation` was taken (for PgWriter.read_all)."""
        fresh = self._fresh.pop(run_id, None)
        return fresh[1] if fresh is not None and fresh[0] == generation else None

    def _held_elsewhere(self, key: int) -> bool:
        """Whether a session held lock `key` a moment ago (see the module docstring)."""
        now = time.monotonic()
        if now - self._held_at > HELD_FRESH:
            with self.reads() as conn:
                rows = conn.execute(
                    "SELECT classid::bigint, objid::bigint FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ).fetchall()
            self._held = {(hi << 32) | lo for hi, lo in rows}
            self._held_at = now
        return key & 0xFFFFFFFFFFFFFFFF in self._held

    def release(self, run_id: str, generation: int) -> None:
        if self._leases.get(run_id) != generation or generation != self.generation:
            return  # that session is gone, and its locks with it
        self._leases.pop(run_id, None)  # writes to the run are refused from now on
        self._fresh.pop(run_id, None)
        with self._unlocks_lock:
            self._unlocks.append((lock_key(run_id), generation))
        self.unlock_released()

    def unlock_released(self) -> None:
        """Unlock the released leases, unless the session is busy: then its user does, when
        it leaves session() (which calls this again after letting go of the session)."""
        if not self._unlocks or not self._lock.acquire(blocking=False):
            return
        try:
            with self._unlocks_lock:
                keys = [k for k, g in self._unlocks if g == self.generation]
                self._unlocks.clear()
            if keys:
                with suppress(StoreUnavailable), self.session() as conn:
                    conn.execute(
                        "SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS k", (keys,)
                    )
        finally:
            self._lock.release()

    def is_leased(self, run_id: str) -> bool:
        if run_id in self._leases:
            return True
        lease = self.try_lease(run_id)
        if lease is None:
            return True
        lease.release()
        return False


Rows = list[tuple[int, bytes]]
Known = tuple[Rows, int]  # rows read earlier, and how many records they hold


def lock_and_read(
    conn: psycopg.Connection[Any], key: int, run_id: str, known: Known | None
) -> tuple[bool, Rows | None]:
    """Try the run's advisory lock and read its records in one round trip: two statements
    in one simple query. The read is the second statement, so its snapshot is taken after
    the lock is held (each statement of a READ COMMITTED transaction takes its own): it sees
    every record of the run's previous holder, which unlocked only after they committed.
    With `known` (rows read earlier, before the lock, and their record count) only the rows
    after them are fetched (a row holds whole appends: one starts where they end), and their
    first row again, to tell the same run from one deleted and created anew.
    Both statements are prepared on the connection (PREPARED): a simple query is parsed and
    planned on each call otherwise, which cost the server more than the round trip saved.
    Returns (locked, rows): rows None when the lock failed or `known` did not hold."""
    return lock_and_read_many(conn, [(key, run_id, known)])[0]


def lock_and_read_many(
    conn: psycopg.Connection[Any], items: list[tuple[int, str, Known | None]]
) -> list[tuple[bool, Rows | None]]:
    """lock_and_read for several runs (key, run id, rows known), all in one simple query."""
    if conn not in _prepared_on:
        for statement in PREPARED:
            conn.execute(statement)
        _prepared_on.add(conn)
    query = []
    for key, run_id, known in items:
        check_id(run_id)  # [0-9a-z] only: a literal in quotes is safe (simple queries take none)
        after = known[1] if known else 0
        query.append(f"EXECUTE wfl_lock({int(key)}); EXECUTE wfl_read('{run_id}', {after})")
    cur = conn.execute("; ".join(query))
    out: list[tuple[bool, Rows | None]] = []
    for i, (_, _, known) in enumerate(items):
        if i:
            cur.nextset()
        row = cur.fetchone()
        rows: Rows | None = cur.fetchall() if cur.nextset() else None
        if not row or not row[0]:
            out.append((False, None))
        elif rows is None or not known:
            out.append((True, rows))
        elif not rows or rows[0][0] != 0 or bytes(rows[0][1]) != bytes(known[0][0][1]):
            out.append((True, None))  # deleted (and maybe created again) meanwhile: read_all reads
        else:
            out.append((True, known[0] + rows[1:]))
    return out


_prepared_on: weakref.WeakSet[Any] = weakref.WeakSet()  # connections that have PREPARED
PREPARED = (
    "PREPARE wfl_lock(bigint) AS SELECT pg_try_advisory_lock($1)",
    "PREPARE wfl_read(text, int) AS SELECT seq, data FROM wfl_records "
    "WHERE run_id = $1 AND (seq >= $2 OR seq = 0) ORDER BY seq",
)


class PgLease:
    def __init__(self, store: Leases, run_id: str, generation: int) -> None:
        self.store = store
        self.run_id = run_id
        self.generation = generation

    def release(self) -> None:
        self.store.release(self.run_id, self.generation)


LeaseOutcome = PgLease | None | BaseException
PENDING = LeasePending()
