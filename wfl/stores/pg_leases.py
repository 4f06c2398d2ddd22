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
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any

from wfl.errors import StoreUnavailable

if TYPE_CHECKING:
    import psycopg

MAX_CONTESTED = 100_000
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
        self._unlocks_lock = threading.Lock()

    def try_lease(self, run_id: str) -> PgLease | None:
        key = lock_key(run_id)
        if run_id in self._contested and self._held_elsewhere(key):
            return None
        self._contested.discard(run_id)
        with self.session() as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if not row or not row[0]:
                if len(self._contested) > MAX_CONTESTED:
                    self._contested.clear()  # only a shortcut: forgetting costs a wait
                self._contested.add(run_id)
                return None
            if run_id in self._leases:  # session locks nest: keep one level only
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
                return None
            self._leases[run_id] = self.generation
            return PgLease(self, run_id, self.generation)

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


class PgLease:
    def __init__(self, store: Leases, run_id: str, generation: int) -> None:
        self.store = store
        self.run_id = run_id
        self.generation = generation

    def release(self) -> None:
        self.store.release(self.run_id, self.generation)
