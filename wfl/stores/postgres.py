"""The PostgreSQL store: runs as rows, leases as session advisory locks, news by LISTEN/NOTIFY.

One session connection per process carries reads, writes and leases. Leases are session
advisory locks, so they end when the worker's connection does (a SIGKILLed worker's backend
exits and PostgreSQL releases them). Because the writes go over the very session that holds
the locks, a write that commits proves the lease was held when it committed; after a
reconnect (a new session, holding nothing) every writer of the old session refuses to write
(LeaseLost) until its run is leased again.

Group commit: appends from all the runs a worker drives are queued; whichever thread gets the
connection writes every queued append in one transaction (one WAL flush for many runs), as
the journal store shares one fsync among a run's records.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from wfl import journal
from wfl.errors import (
    AmbiguousRunId,
    InvalidArguments,
    JournalCorrupt,
    LeaseLost,
    RunNotFound,
    StoreError,
    StoreUnavailable,
)
from wfl.records import Record
from wfl.state import RunState
from wfl.store import check_id, new_run_id
from wfl.stores import mask, pg_arrays, pg_raw, pg_schema, pg_summary
from wfl.stores.pg_extras import KeysAndSchedules, PgNotes
from wfl.stores.pg_leases import Leases
from wfl.stores.pg_news import PgListener, watch_changes
from wfl.stores.pg_write import (
    HEADER,
    PgWriter,
    _Append,
    append_many,
    group_commit,
    in_rows,
    insert_records,
    journal_size,
    rows_size,
    save_summary,
    summary_params,
    tune_writer,
)

if TYPE_CHECKING:
    import psycopg

    from wfl.index import RunSummary
    from wfl.stores.base import RunWriter

CHANNEL = "wfl"  # news: new runs, cancels, events, children's ends, deletions, schedules
WORKER_APP = "wfl-worker"
CONNECT_TIMEOUT = 5


class PostgresStore(KeysAndSchedules, Leases):
    """Runs in a PostgreSQL database; see the module docstring."""

    def __init__(self, url: str, *, application_name: str | None = None) -> None:
        self.url = url
        # "wfl <pid>": which process holds which leases shows in pg_locks/pg_stat_activity
        self.application_name = application_name or f"wfl {os.getpid()}"
        self._spec = mask(url)
        self._lock = threading.RLock()  # the session connection, one user at a time
        self._conn: psycopg.Connection[Any] | None = None
        self.generation = 0  # bumped at each new session: leases of older ones are gone
        self.init_leases()
        self.cleared_notes: set[tuple[str, str]] = set()  # see PgNotes.delete
        self._queue: list[_Append] = []
        self._queue_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._reader: psycopg.Connection[Any] | None = None
        self._announced = threading.local()  # .run_id: see create_run

    @property
    def spec(self) -> str:
        return self._spec

    io_threads = 32  # appends waiting on a commit join the next one: bigger group commits

    @property
    def notes(self) -> PgNotes:
        return PgNotes(self)

    def __repr__(self) -> str:
        return f"PostgresStore({self._spec!r})"

    # -- the session ------------------------------------------------------------------------

    def connect(self, *, application_name: str | None = None) -> psycopg.Connection[Any]:
        """A new autocommit connection with the schema in place."""
        import psycopg

        try:
            conn = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                application_name=application_name or self.application_name,
            )
        except psycopg.ProgrammingError as exc:  # a malformed URL or parameter
            raise InvalidArguments(f"bad store {self._spec}: {_one_line(exc)}") from None
        except psycopg.Error as exc:
            raise self.unavailable(exc) from None
        pg_arrays.register(conn)
        try:
            pg_schema.ensure(conn, self._spec)
        except psycopg.Error as exc:
            conn.close()
            raise self.unavailable(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"store {self._spec} is unavailable: {_one_line(exc)}")

    @contextmanager
    def session(self) -> Iterator[psycopg.Connection[Any]]:
        """The session connection (reconnecting if it broke), for one user at a time."""
        import psycopg

        try:
            with self._lock:
                if self._conn is None or self._conn.broken or self._conn.closed:
                    self._drop()
                    self._conn = self.connect()
                    tune_writer(self._conn)
                try:
                    yield self._conn
                except psycopg.Error as exc:
                    if self._conn is None or self._conn.broken or self._conn.closed:
                        self._drop()
                        raise self.unavailable(exc) from None
                    if isinstance(exc, psycopg.OperationalError):
                        raise self.unavailable(exc) from None
                    raise StoreError(f"store {self._spec}: {_one_line(exc)}") from None
        finally:
            self.unlock_released()  # leases released while we held the session

    @contextmanager
    def reads(self) -> Iterator[psycopg.Connection[Any]]:
        """A second connection for reads, so that reading (a run's records when a worker
        loads it, a listing) never waits behind the session's commits."""
        import psycopg

        with self._read_lock:
            if self._reader is None or self._reader.broken or self._reader.closed:
                if self._reader is not None:
                    with suppress(Exception):
                        self._reader.close()
                self._reader = self.connect()
            try:
                yield self._reader
            except psycopg.Error as exc:
                if self._reader.broken or self._reader.closed:
                    raise self.unavailable(exc) from None
                if isinstance(exc, psycopg.OperationalError):
                    raise self.unavailable(exc) from None
                raise StoreError(f"store {self._spec}: {_one_line(exc)}") from None

    def _drop(self) -> None:
        """Forget the session: its leases died with it."""
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None
            self.generation += 1
            self._leases.clear()

    def ensure(self) -> None:
        with self.session():
            pass

    def close(self) -> None:
        with self._lock:
            self._drop()
        with self._read_lock:
            if self._reader is not None:
                with suppress(Exception):
                    self._reader.close()
                self._reader = None

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        make_records: Callable[[str], list[Record]],
        *,
        run_id: str | None = None,
        key: str | None = None,
    ) -> str:
        """As the protocol says. Without `key`: one statement (CREATE_RUN: the run's row, its
        records and the NOTIFY that announces it, one round trip and one transaction); with
        `key` (or records too many for one row: a migrated run), the key row and the run are
        inserted in one transaction (or the run already holding the key is returned). Either
        way the NOTIFY goes out as the run commits: the notify() that ops.create_run sends
        next, in this thread, for this run, is skipped."""
        self._announced.run_id = None
        with self.session() as conn:
            while True:
                new_id = run_id if run_id is not None else new_run_id()
                check_id(new_id)
                records = make_records(new_id)
                data = [journal.encode(r) for r in records]
                rows = in_rows(data)
                params = [new_id.encode(), b"%d" % len(data), b"%d" % journal_size(data),
                          *summary_params(RunState.from_records(records)),
                          b"".join(rows[0][1]), CHANNEL.encode()]  # fmt: skip
                if key is None and len(rows) == 1:
                    if CREATE_RUN.run(conn, params).ntuples:
                        self._announced.run_id = new_id
                        return new_id
                    if run_id is not None:
                        return run_id  # a child created twice: the first one stands
                    continue  # 48 random bits collided: draw again
                try:
                    with conn.transaction():
                        held = None if key is None else self.claim_key(conn, key, new_id)
                        if held is not None:
                            return held
                        if not CREATE_RUN.run(conn, params).ntuples:
                            if run_id is not None:
                                return run_id
                            raise _Collision  # roll the key back, draw again
                        for first, part in rows[1:]:
                            insert_records(conn, new_id, first, part)
                        self._announced.run_id = new_id
                        return new_id
                except _Collision:
                    continue

    def exists(self, run_id: str) -> bool:
        check_id(run_id)
        with self.reads() as conn:
            return (
                conn.execute("SELECT 1 FROM wfl_runs WHERE id = %s", (run_id,)).fetchone()
                is not None
            )

    def run_ids(self) -> list[str]:
        with self.reads() as conn:
            return [r[0] for r in conn.execute("SELECT id FROM wfl_runs")]

    def stray_files(self) -> list[str]:
        return []  # rows are keyed by valid run ids only

    def resolve(self, prefix: str) -> str:
        check_id(prefix)
        with self.reads() as conn:
            # ids are [0-9a-z] in the "C" collation: a prefix is a range of the primary key
            rows = conn.execute(
                "SELECT id FROM wfl_runs WHERE id >= %s AND id < %s ORDER BY id LIMIT 6",
                (prefix, prefix + "~"),
            ).fetchall()
        matches = [r[0] for r in rows]
        if prefix in matches:
            return prefix
        if not matches:
            raise RunNotFound(prefix)
        if len(matches) > 1:
            raise AmbiguousRunId(prefix, matches)
        return str(matches[0])

    def read(self, run_id: str) -> list[Record]:
        records, damage = self.read_damaged(run_id)
        if damage is not None:
            raise damage
        return records

    def read_damaged(self, run_id: str) -> tuple[list[Record], JournalCorrupt | None]:
        check_id(run_id)
        with self.reads() as conn:
            rows = conn.execute(
                "SELECT seq, data FROM wfl_records WHERE run_id = %s ORDER BY seq", (run_id,)
            ).fetchall()
        if not rows:
            raise RunNotFound(run_id)
        records, damage = self._decode(run_id, rows)
        if damage is None:
            self.remember(run_id, rows, len(records))
        return records, damage

    def _decode(
        self, run_id: str, rows: list[tuple[int, bytes]], first: int = 0
    ) -> tuple[list[Record], JournalCorrupt | None]:
        """The records of `rows` (rows of a run from record `first` on: each holds one
        append's records back to back, keyed by the seq of its first; schema 3's rows hold
        one record each), or those before the first damage and the damage."""
        records: list[Record] = []
        where = f"{self._spec} run {run_id}"
        for seq, data in rows:
            if seq != first + len(records):  # rows missing, or overlapping
                found = f"record {seq} where record {first + len(records)} belongs"
                return records, JournalCorrupt(where, seq, found)
            try:
                values = journal.decode_stream(bytes(data))
            except Exception as exc:
                return records, JournalCorrupt(where, seq, f"record {seq} does not decode ({exc})")
            if not values:
                return records, JournalCorrupt(where, seq, f"the row of record {seq} is empty")
            for i, record in enumerate(values):
                if not isinstance(record, dict) or "t" not in record:
                    return records, JournalCorrupt(where, seq, f"record {seq + i} is not a record")
                records.append(record)
        return records, None

    def _locked_history(
        self, conn: psycopg.Connection[Any], run_id: str
    ) -> tuple[list[Record], Any]:
        """The run's records (and their rows), its summary row locked FOR UPDATE for the rest
        of the transaction, so update() and delete() of this run wait for each other."""
        row = conn.execute(
            "SELECT seq FROM wfl_runs WHERE id = %s FOR UPDATE", (run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        rows = conn.execute(
            "SELECT seq, data FROM wfl_records WHERE run_id = %s ORDER BY seq", (run_id,)
        ).fetchall()
        existing, damage = self._decode(run_id, rows)
        if damage is not None:
            raise damage
        return existing, rows

    def update(self, run_id: str, decide: Callable[[list[Record]], list[Record]]) -> list[Record]:
        check_id(run_id)
        with self.session() as conn, conn.transaction():
            existing, rows = self._locked_history(conn, run_id)
            new = decide(existing)
            if new:
                data = [journal.encode(r) for r in new]
                insert_records(conn, run_id, len(existing), data)
                state = RunState.from_records(existing + new)
                size = rows_size(rows, len(existing)) + journal_size(data) - HEADER
                save_summary(conn, run_id, len(existing) + len(new), size, state)
            return new

    def delete(self, run_id: str, *, check: Callable[[list[Record]], None] | None = None) -> None:
        check_id(run_id)
        with self.session() as conn, conn.transaction():
            if check is not None:  # decided under the row lock that update() takes too
                check(self._locked_history(conn, run_id)[0])
            conn.execute("DELETE FROM wfl_records WHERE run_id = %s", (run_id,))
            conn.execute("DELETE FROM wfl_runs WHERE id = %s", (run_id,))
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, run_id))

    def writer(self, run_id: str) -> PgWriter:
        check_id(run_id)
        generation = self._leases.get(run_id)
        if generation is None:
            raise LeaseLost(f"run {run_id} is not leased by this worker")
        return PgWriter(self, run_id, generation)

    def summaries(self, *, newest: int | None = None, save: bool = True) -> list[RunSummary]:
        sql = (
            "SELECT id, state, workflow, summary FROM wfl_runs WHERE seq > 0 "
            "ORDER BY created_at DESC"
        )
        with self.reads() as conn:
            if newest is not None:
                rows = conn.execute(sql + " LIMIT %s", (newest,)).fetchall()
            else:
                rows = conn.execute(sql).fetchall()
        return [pg_summary.unpack(r[0], r[1], r[2], bytes(r[3])) for r in rows]

    def versions(self) -> dict[str, object]:
        with self.reads() as conn:
            return {r[0]: r[1] for r in conn.execute("SELECT id, seq FROM wfl_runs")}

    def modified_at(self, run_id: str) -> float:
        with self.reads() as conn:
            row = conn.execute(
                "SELECT updated_at FROM wfl_runs WHERE id = %s", (run_id,)
            ).fetchone()
        if row is None:
            raise RunNotFound(run_id)
        return float(row[0])

    # -- leases: pg_leases.py ---------------------------------------------------------------

    def workers_alive(self) -> bool:
        with self.reads() as conn:
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                "AND datname = current_database())",
                (WORKER_APP,),
            ).fetchone()
        return bool(row and row[0])

    # -- news -------------------------------------------------------------------------------

    def changes(self, *, stop: asyncio.Event) -> AsyncIterator[set[str]]:
        """For watchers (the web view): sets of ids of runs that changed (created, appended
        to, deleted): NOTIFY, and one indexed look every WATCH_EVERY s for appends (a NOTIFY
        per append would serialize every worker's commits on PostgreSQL's notify lock)."""
        return watch_changes(self, stop)

    def changed_since(self, mark: int) -> tuple[set[str], int]:
        """Runs written since change mark `mark` (0: ever), and the mark to ask with next. A
        run may come again at the next look (the mark looks back pg_schema.CHANGED_SLACK
        quarter seconds, for writes that committed a moment after their statement began)."""
        with self.reads() as conn:
            now = conn.execute("SELECT " + pg_schema.CHANGED).fetchone()
            rows = conn.execute("SELECT id FROM wfl_runs WHERE changed >= %s", (mark,)).fetchall()
        assert now is not None
        return {r[0] for r in rows}, int(now[0]) - pg_schema.CHANGED_SLACK

    def notify(self, run_id: str, *, skip: str = "") -> None:
        announced, self._announced.run_id = getattr(self._announced, "run_id", None), None
        if run_id == announced and not skip:
            return  # the statement that created it announced it (create_run)
        with self.session() as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, run_id))

    def listen(self, *, worker: bool = True) -> tuple[str, PgListener] | None:
        import psycopg

        conn = self.connect(application_name=WORKER_APP if worker else "wfl-watcher")
        try:
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            conn.close()
            raise self.unavailable(exc) from None
        return f"pg-{conn.info.backend_pid}", PgListener(self, conn)

    # -- group commit -----------------------------------------------------------------------

    def commit_append(self, request: _Append) -> list[Record]:
        group_commit(self, [request])
        return request.outcome()

    def append_many(
        self, batches: Sequence[tuple[RunWriter, bytes]]
    ) -> list[list[Record] | BaseException]:
        """Append each writer's framed records durably, all in one group commit (one
        statement for every run, see pg_write.write_batch); per batch the records others
        appended before it, or the exception it met."""
        return append_many(self, batches)


# A new run in one statement: its summary row, its records (one row from record 0 on, see
# pg_schema), and the NOTIFY that announces it (sent when the statement's transaction
# commits). No row back: the id was taken (a child created twice, or random bits that
# collided).
CREATE_RUN = pg_raw.Statement(
    "wfl_create_run",
    "WITH r AS (INSERT INTO wfl_runs (id, seq, size, created_at, updated_at, state, workflow, "
    "wake_at, summary, changed) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %b, "
    + pg_schema.CHANGED
    + ") ON CONFLICT (id) DO NOTHING RETURNING id), "
    "i AS (INSERT INTO wfl_records (run_id, seq, data) SELECT r.id, 0, %b::bytea FROM r) "
    "SELECT pg_notify(%s, id) FROM r",
)


class _Collision(Exception):
    pass


def _one_line(exc: BaseException) -> str:
    return mask(" ".join(str(exc).split())) or type(exc).__name__
