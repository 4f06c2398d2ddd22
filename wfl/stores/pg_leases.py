"""Leases in PostgreSQL: session advisory locks held by a worker's session connection (see
postgres.py: the connection that writes is the one that holds them, so a commit proves the
lease). Mixed into PostgresStore.

Two shortcuts keep lease traffic off a worker's event loop, where every call would otherwise
wait behind the session's group commit in flight: a run another worker holds is asked for
again (every second or so, in case that worker died) against one look at pg_locks per
HELD_FRESH s on the reads connection; and a lease released while the session is busy is
unlocked by whoever holds the session, when it is done (at once, or a commit later).
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any

from wfl.errors import StoreUnavailable
from wfl.store import check_id

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
        self._recent: dict[str, list[tuple[int, bytes]]] = {}  # rows of runs read lately
        self._fresh: dict[str, tuple[int, list[tuple[int, bytes]]]] = {}  # read when leased
        self._unlocks_lock = threading.Lock()

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

    def remember(self, run_id: str, rows: list[tuple[int, bytes]]) -> None:
        """Rows of `run_id` just read (PostgresStore.read): a lease attempt soon after need
        only fetch what came after them (a worker reads a run it hears of, then leases it)."""
        if len(rows) > RECENT_ROWS or sum(len(data) for _, data in rows) > RECENT_BYTES:
            return  # a big run: read again (memory stays bounded: RECENT_RUNS x RECENT_BYTES)
        if len(self._recent) >= RECENT_RUNS:
            with suppress(KeyError, StopIteration, RuntimeError):  # (another thread's pop)
                del self._recent[next(iter(self._recent))]
        self._recent[run_id] = rows

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


def lock_and_read(
    conn: psycopg.Connection[Any], key: int, run_id: str, known: list[tuple[int, bytes]] | None
) -> tuple[bool, list[tuple[int, bytes]] | None]:
    """Try the run's advisory lock and read its records in one round trip: two statements
    in one simple query. The read is the second statement, so its snapshot is taken after
    the lock is held (each statement of a READ COMMITTED transaction takes its own): it sees
    every record of the run's previous holder, which unlocked only after they committed.
    With `known` (rows read earlier, before the lock) only what came after them is fetched,
    and their first row again, to tell the same run from one deleted and created anew.
    Both statements are prepared on the connection (PREPARED): a simple query is parsed and
    planned on each call otherwise, which cost the server more than the round trip saved.
    Returns (locked, rows): rows None when the lock failed or `known` did not hold."""
    check_id(run_id)  # [0-9a-z] only: a literal in quotes is safe (simple queries take none)
    if conn not in _prepared_on:
        for statement in PREPARED:
            conn.execute(statement)
        _prepared_on.add(conn)
    after = len(known) if known else 0
    cur = conn.execute(f"EXECUTE wfl_lock({int(key)}); EXECUTE wfl_read('{run_id}', {after})")
    row = cur.fetchone()
    if not row or not row[0]:
        return False, None
    if not cur.nextset():
        return True, None
    rows: list[tuple[int, bytes]] = cur.fetchall()
    if not known:
        return True, rows
    if not rows or rows[0][0] != 0 or bytes(rows[0][1]) != bytes(known[0][1]):
        return True, None  # deleted (and maybe created again) meanwhile: read_all reads
    return True, known + rows[1:]


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
