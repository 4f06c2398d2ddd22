"""The PostgreSQL store's write path: a leased run's writer, the appends that wait for a
group commit, and the rows one append writes (records, then the run's summary row, in the
same transaction). See postgres.py for the session and the group commit itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from wfl import journal
from wfl.errors import LeaseLost, RunNotFound, StoreUnavailable
from wfl.records import Record
from wfl.state import RunState
from wfl.stores.pg_arrays import (
    PackedArray,
    bytea_array,
    float8_array,
    int4_array,
    int8_array,
    text_array,
)

if TYPE_CHECKING:
    import psycopg

    from wfl.stores.base import RunWriter
    from wfl.stores.postgres import PostgresStore

HEADER = len(journal.MAGIC)


# One statement writes a whole batch of appends (one per run): it moves each run's summary row
# from the `seq` its writer last saw to the new one and inserts the records of the runs whose
# row moved. A run that others appended to meanwhile (a cancel, an event...) keeps its row and
# gets no records: its append is redone the careful way (_Append.check). Autocommitted on its
# own, the statement is one round trip, one transaction and one WAL flush for every run; the
# same text each time, so psycopg prepares it once per connection. Parameters go in binary
# (%b): psycopg then neither quotes nor hex-escapes the arrays (half the client CPU).
BATCH = (
    "WITH a AS (SELECT * FROM unnest(%b::text[], %b::int[], %b::int[], %b::bigint[], "
    "%b::float8[], %b::float8[], %b::text[], %b::text[], %b::float8[], %b::bytea[]) "
    "AS a(id, old, seq, size, created_at, updated_at, state, workflow, wake_at, summary)), "
    "r AS (UPDATE wfl_runs w SET seq = a.seq, size = a.size, created_at = a.created_at, "
    "updated_at = a.updated_at, state = a.state, workflow = a.workflow, wake_at = a.wake_at, "
    "summary = a.summary, changed = nextval('wfl_change_seq') "
    "FROM a WHERE w.id = a.id AND w.seq = a.old RETURNING w.id), "
    "i AS (INSERT INTO wfl_records (run_id, seq, data) "
    "SELECT u.id, u.seq, u.data FROM unnest(%b::text[], %b::int[], %b::bytea[]) "
    "AS u(id, seq, data) WHERE u.id IN (SELECT id FROM r)) "
    "SELECT id FROM r"
)


def append_many(
    store: PostgresStore, batches: Sequence[tuple[RunWriter, bytes]]
) -> list[list[Record] | BaseException]:
    """PostgresStore.append_many: every writer's records in one group commit; an error is
    reported for its own batch (the others were committed)."""
    out: list[list[Record] | BaseException] = []
    requests: list[_Append] = []
    for writer, payload in batches:
        assert isinstance(writer, PgWriter)  # the store's own writers
        if writer.seq < 0:
            out.append(RuntimeError("read_all() must come before append()"))
            continue
        request = _Append(writer, journal.payloads(payload))
        requests.append(request)
        out.append([])
    with suppress(Exception):  # each failed request holds its error: reported below
        group_commit(store, [r for r in requests if r.data])
    pending = iter(requests)
    for i, item in enumerate(out):
        if isinstance(item, BaseException):
            continue
        request = next(pending)
        try:
            out[i] = request.outcome() if request.data else request.writer.poll()
        except Exception as exc:
            out[i] = exc
    return out


def group_commit(store: PostgresStore, requests: list[_Append]) -> None:
    """Queue `requests`; whichever thread gets the session writes everything queued by then
    (its own and other threads'), so appends waiting on a commit share the next one."""
    with store._queue_lock:
        store._queue.extend(requests)
    try:
        with store.session() as conn:
            if not all(r.done for r in requests):
                with store._queue_lock:
                    batch, store._queue = store._queue, []
                _write(store, conn, batch)
    except BaseException as exc:
        with store._queue_lock:  # not written: nobody else may write them later
            store._queue = [r for r in store._queue if all(r is not q for q in requests)]
        for request in requests:
            if not request.done:
                request.fail(exc)
        raise


def _write(store: PostgresStore, conn: psycopg.Connection[Any], batch: list[_Append]) -> None:
    pending = []
    for request in batch:
        w = request.writer
        if w.generation != store.generation or store._leases.get(w.run_id) != w.generation:
            request.fail(LeaseLost(f"run {w.run_id}: this worker's lease ended"))
        elif w.broken:
            request.fail(LeaseLost(f"run {w.run_id}: reload it (an earlier write failed)"))
        else:
            pending.append(request)
    try:
        while pending:
            # one append per run and statement (a driver has one append in flight; a second
            # one to the same run waits for the next round)
            first: dict[str, _Append] = {}
            later = []
            for request in pending:
                if request.writer.run_id in first:
                    later.append(request)
                else:
                    first[request.writer.run_id] = request
            for request in first.values():
                request.writer.broken = True  # until the commit says otherwise
                request.prepare()
            written = write_batch(conn, list(first.values()))
            missed = []
            for run_id, request in first.items():
                if run_id in written:
                    request.succeed()
                else:
                    missed.append(request)
            if missed:  # others appended to these runs meanwhile: the careful way
                missed.sort(key=lambda r: r.writer.run_id)  # one lock order: no deadlocks
                with conn.transaction():
                    for request in missed:
                        request.check(conn)
                for request in missed:
                    request.succeed()
            pending = later
    except BaseException as exc:
        for request in batch:
            if not request.done:
                request.fail(exc)
        raise


def write_batch(conn: psycopg.Connection[Any], batch: list[_Append]) -> set[str]:
    """Write `batch` (appends to distinct runs, prepared) in one autocommitted statement;
    the ids of the runs it wrote."""
    columns: list[list[Any]] = [[] for _ in range(13)]
    for request in batch:
        w = request.writer
        row = (w.run_id, w.seq, request._seq, request._size, *request.values)
        for column, value in zip(columns, row, strict=False):
            column.append(value)
        columns[10].extend([w.run_id] * len(request.data))
        columns[11].extend(range(w.seq, request._seq))
        columns[12].extend(request.data)
    packed = [pack(values) for pack, values in zip(PACKERS, columns, strict=True)]
    return {row[0] for row in conn.execute(BATCH, packed).fetchall()}


# BATCH's parameters in order, packed by pg_arrays (psycopg's own array dumper costs more
# client CPU than everything else in a group commit)
PACKERS: list[Callable[[Any], PackedArray]] = [
    text_array, int4_array, int4_array, int8_array, float8_array, float8_array, text_array,
    text_array, float8_array, bytea_array, text_array, int4_array, bytea_array,
]  # fmt: skip


class _Append:
    """One writer's records, waiting for (or part of) a group commit."""

    def __init__(self, writer: PgWriter, data: list[bytes]) -> None:
        self.writer = writer
        self.data = data
        self.done = False
        self.error: BaseException | None = None
        self.foreign: list[Record] = []
        self._seq = 0
        self._size = 0
        self.values: tuple[Any, ...] = ()

    def prepare(self) -> None:
        """The common case: no one else appended since this writer last looked, so the run's
        row still has our `seq`. Apply the records to the writer's state (the summary row's
        new values); write_batch() tells whether that case held."""
        w = self.writer
        for data in self.data:
            w.state.apply(journal.decode(data))
        self._seq = w.seq + len(self.data)
        self._size = w.known_size + journal_size(self.data) - HEADER
        self.values = summary_values(w.state)

    def check(self, conn: psycopg.Connection[Any]) -> None:
        """Others appended meanwhile (a cancel, an event...), so send() wrote nothing: lock
        the run, rebuild its state with their records first, then insert ours."""
        w = self.writer
        row = conn.execute(
            "SELECT seq, size FROM wfl_runs WHERE id = %s FOR UPDATE", (w.run_id,)
        ).fetchone()
        if row is None:
            raise RunNotFound(w.run_id)
        seq, size = row
        everything = w.fetch(conn, 0)
        self.foreign = everything[w.seq :]
        w.state = RunState.from_records(everything)
        for data in self.data:
            w.state.apply(journal.decode(data))
        insert_records(conn, w.run_id, seq, self.data)
        self._seq = seq + len(self.data)
        self._size = size + journal_size(self.data) - HEADER
        save_summary(conn, w.run_id, self._seq, self._size, w.state)

    def succeed(self) -> None:
        self.writer.seq = self._seq
        self.writer.known_size = self._size
        self.writer.broken = False
        self.done = True

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done = True

    def outcome(self) -> list[Record]:
        if self.error is not None:
            if isinstance(self.error, LeaseLost | RunNotFound | StoreUnavailable):
                raise self.error
            raise LeaseLost(f"run {self.writer.run_id}: the write failed ({self.error})")
        return self.foreign


class PgWriter:
    """Appends to one leased run; keeps the run's state to maintain its summary row."""

    def __init__(self, store: PostgresStore, run_id: str, generation: int) -> None:
        self.store = store
        self.run_id = run_id
        self.generation = generation
        self.seq = -1
        self.known_size = 0
        self.state = RunState()
        self.broken = False

    def read_all(self) -> list[Record]:
        # read as the lease was taken (try_lease), else one query: a worker loads runs on
        # its event loop
        rows = self.store.take_fresh(self.run_id, self.generation)
        if rows is None:
            with self.store.reads() as conn:
                rows = conn.execute(
                    "SELECT seq, data FROM wfl_records WHERE run_id = %s ORDER BY seq",
                    (self.run_id,),
                ).fetchall()
        if not rows:  # a run's first records are inserted with its row
            raise RunNotFound(self.run_id)
        records = self._decoded(rows)
        self.state = RunState.from_records(records)
        self.seq = len(records)
        self.known_size = journal_size([bytes(data) for _, data in rows])  # = wfl_runs.size
        return records

    def fetch(self, conn: psycopg.Connection[Any], after: int) -> list[Record]:
        rows = conn.execute(
            "SELECT seq, data FROM wfl_records WHERE run_id = %s AND seq >= %s ORDER BY seq",
            (self.run_id, after),
        ).fetchall()
        return self._decoded(rows)

    def _decoded(self, rows: list[tuple[int, bytes]]) -> list[Record]:
        records, damage = self.store._decode(self.run_id, rows)
        if damage is not None:
            raise damage
        return records

    def append_frames(self, payload: bytes, *, sync: bool = True) -> list[Record]:
        if self.seq < 0:
            raise RuntimeError("read_all() must come before append()")
        data = journal.payloads(payload)
        if not data:
            return self.poll()
        return self.store.commit_append(_Append(self, data))

    def poll(self) -> list[Record]:
        with self.store.reads() as conn:
            records = self.fetch(conn, self.seq)
        for record in records:
            self.state.apply(record)
        self.seq += len(records)
        return records

    def size(self) -> int:
        return self.known_size

    def close(self) -> None:
        pass  # the connection belongs to the store


def insert_records(
    conn: psycopg.Connection[Any], run_id: str, first: int, data: list[bytes]
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO wfl_records (run_id, seq, data) VALUES (%s, %s, %s)",
            [(run_id, first + i, d) for i, d in enumerate(data)],
        )


def journal_size(data: list[bytes]) -> int:
    """Bytes these records take as a new journal file (header + frames)."""
    return HEADER + sum(journal.FRAME_OVERHEAD + len(d) for d in data)


def summary_values(state: RunState) -> tuple[Any, ...]:
    """created_at, updated_at, state, workflow, wake_at, summary: a run row's summary columns."""
    from wfl.index import RunSummary

    summary = RunSummary.of(state)
    # times are floats (RunState makes them so): a binary array's elements share one type
    return (summary.created_at, summary.updated_at, summary.status["state"], state.workflow,
            summary.wake_at, journal.pack(summary.to_record()))  # fmt: skip


def save_summary(
    conn: psycopg.Connection[Any], run_id: str, seq: int, size: int, state: RunState
) -> None:
    conn.execute(
        "UPDATE wfl_runs SET seq = %s, size = %s, created_at = %s, updated_at = %s, "
        "state = %s, workflow = %s, wake_at = %s, summary = %s, "
        "changed = nextval('wfl_change_seq') WHERE id = %s",
        (seq, size, *summary_values(state), run_id),
    )
