"""Idempotency keys and schedules in PostgreSQL (SPEC §8), the same contract as the journal
directory's (wfl/store.py): one run per key across every process and machine (the key row
and the run are inserted in one transaction, so a key never names a run that cannot appear),
and schedules read-modified-written under a row lock. And the workers' notes for `wfl status
--why` (wfl/codestate.py), which a directory keeps as small files."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, suppress
from typing import TYPE_CHECKING, Any

from wfl import journal
from wfl.errors import ScheduleExists, ScheduleNotFound, StoreError
from wfl.store import SCHEDULES_NEWS, check_schedule_name

if TYPE_CHECKING:
    import psycopg


class KeysAndSchedules:
    """Mixed into PostgresStore; needs its session() and create_run()."""

    def session(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        raise NotImplementedError

    def notify(self, run_id: str, *, skip: str = "") -> None:
        raise NotImplementedError

    # -- keys -------------------------------------------------------------------------------

    def claim_key(self, conn: psycopg.Connection[Any], key: str, run_id: str) -> str | None:
        """(Inside the creating transaction) take `key` for `run_id`; or the run that holds
        it already. A key whose run was deleted by hand is taken over."""
        row = conn.execute(
            "INSERT INTO wfl_keys (key, run_id) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING "
            "RETURNING run_id",
            (key, run_id),
        ).fetchone()
        if row is not None:
            return None
        held = conn.execute(
            "SELECT k.run_id, r.id FROM wfl_keys k LEFT JOIN wfl_runs r ON r.id = k.run_id "
            "WHERE k.key = %s FOR UPDATE OF k",
            (key,),
        ).fetchone()
        if held is not None and held[1] is not None:
            return str(held[0])
        conn.execute("UPDATE wfl_keys SET run_id = %s WHERE key = %s", (run_id, key))
        return None

    def run_for_key(self, key: str) -> str | None:
        with self.session() as conn:
            row = conn.execute(
                "SELECT k.run_id FROM wfl_keys k JOIN wfl_runs r ON r.id = k.run_id "
                "WHERE k.key = %s",
                (key,),
            ).fetchone()
        return str(row[0]) if row else None

    def free_key(self, key: str, run_id: str) -> None:
        with self.session() as conn:
            conn.execute("DELETE FROM wfl_keys WHERE key = %s AND run_id = %s", (key, run_id))

    # -- schedules --------------------------------------------------------------------------

    def add_schedule(self, data: dict[str, Any]) -> None:
        name = check_schedule_name(str(data["name"]))
        with self.session() as conn:
            row = conn.execute(
                "INSERT INTO wfl_schedules (name, data) VALUES (%s, %s) "
                "ON CONFLICT (name) DO NOTHING RETURNING name",
                (name, journal.encode(data)),
            ).fetchone()
        if row is None:
            raise ScheduleExists(name)

    def schedules(self) -> list[dict[str, Any]]:
        with self.session() as conn:
            rows = conn.execute("SELECT data FROM wfl_schedules ORDER BY name").fetchall()
        return [dict(journal.decode(bytes(r[0]))) for r in rows]

    def schedule(self, name: str) -> dict[str, Any]:
        check_schedule_name(name)
        with self.session() as conn:
            row = conn.execute("SELECT data FROM wfl_schedules WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise ScheduleNotFound(name)
        return dict(journal.decode(bytes(row[0])))

    def update_schedule(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        check_schedule_name(name)
        with self.session() as conn, conn.transaction():
            row = conn.execute(
                "SELECT data FROM wfl_schedules WHERE name = %s FOR UPDATE", (name,)
            ).fetchone()
            if row is None:
                raise ScheduleNotFound(name)
            current = dict(journal.decode(bytes(row[0])))
            new = change(dict(current))
            if new is None or new == current:
                return current
            conn.execute(
                "UPDATE wfl_schedules SET data = %s WHERE name = %s", (journal.encode(new), name)
            )
            return new

    def remove_schedule(self, name: str) -> None:
        check_schedule_name(name)
        with self.session() as conn:
            row = conn.execute(
                "DELETE FROM wfl_schedules WHERE name = %s RETURNING name", (name,)
            ).fetchone()
        if row is None:
            raise ScheduleNotFound(name)

    def notify_schedules(self) -> None:
        self.notify(SCHEDULES_NEWS)


class PgNotes:
    """Notes as rows of wfl_notes (kind, key) -> JSON text. A "workers" note is keyed by the
    listener's name, pg-<backend pid>: it counts only while that backend is alive (a worker
    that died leaves its row behind, unread, until a worker with that name writes it)."""

    def __init__(self, store: Any) -> None:
        self.store = store  # a PostgresStore

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        with self.store.reads() as conn:
            row = conn.execute(
                "SELECT data FROM wfl_notes WHERE kind = %s AND key = %s", (kind, key)
            ).fetchone()
        return _document(row[0]) if row else None

    def put(self, kind: str, key: str, value: dict[str, Any]) -> None:
        self.store.cleared_notes.discard((kind, key))
        with suppress(StoreError), self.store.session() as conn:  # the log still says it
            conn.execute(
                "INSERT INTO wfl_notes (kind, key, data) VALUES (%s, %s, %s) "
                "ON CONFLICT (kind, key) DO UPDATE SET data = EXCLUDED.data",
                (kind, key, json.dumps(value)),
            )

    def delete(self, kind: str, key: str) -> None:
        """Once per process and note (unless this process writes it again): a worker clears
        the note of a workflow each time it loads one of its runs, and a write per load
        would cost a round trip on the worker's event loop."""
        if (kind, key) in self.store.cleared_notes:
            return
        with suppress(StoreError), self.store.session() as conn:
            conn.execute("DELETE FROM wfl_notes WHERE kind = %s AND key = %s", (kind, key))
            self.store.cleared_notes.add((kind, key))

    def all(self, kind: str) -> list[dict[str, Any]]:
        sql = "SELECT data FROM wfl_notes WHERE kind = %s"
        if kind == "workers":  # live workers only: their listeners' backends
            sql += (
                " AND key IN (SELECT 'pg-' || pid FROM pg_stat_activity "
                "WHERE datname = current_database())"
            )
        with self.store.reads() as conn:
            rows = conn.execute(sql + " ORDER BY key", (kind,)).fetchall()
        found = (_document(r[0]) for r in rows)
        return [note for note in found if note is not None]


def _document(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
