"""The PostgreSQL store's write path: a leased run's writer, the appends that wait for a
group commit, and the rows one append writes (records, then the run's summary row, in the
same transaction). See postgres.py for the session and the group commit itself."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from wfl import journal
from wfl.errors import LeaseLost, RunNotFound, StoreUnavailable
from wfl.records import Record
from wfl.state import RunState
from wfl.stores import pg_summary
from wfl.stores.pg_arrays import (
    bytea_array,
    float8_array,
    int4_array,
    int8_array,
    text_array,
)
from wfl.stores.pg_raw import Statement, column, text
from wfl.stores.pg_schema import CHANGED

if TYPE_CHECKING:
    import psycopg

    from wfl.stores.base import RunWriter
    from wfl.stores.postgres import PostgresStore

HEADER = len(journal.MAGIC)


# One statement writes a whole batch of appends (one per run): it moves each run's summary row
# from the `seq` its writer last saw to the new one and inserts the records of the runs whose
# row moved, one row per append (schema 4: the append's records back to back, keyed by the
# seq of its first). A run that others appended to meanwhile (a cancel, an event...) keeps its
# row and gets no records: its append is redone the careful way (_Append.check). Autocommitted
# on its own, the statement is one round trip, one transaction and one WAL flush for every
# run; prepared once per connection and run through libpq (pg_raw), its parameters are arrays
# in binary that wfl packs (pg_arrays: psycopg's own array dumper was half the client CPU).
# The rows are found by `id = ANY(ids)` (an index lookup each, whatever the table's size;
# joined to the arrays alone, the plan for a small table was a scan of all of it); the update
# hands each moved row's records on (RETURNING), so no second look at the arrays is needed.
# created_at and workflow never change after the run's first records: not sent again.
# `changed` keeps its value within a quarter second (pg_schema.CHANGED): with no indexed
# column changed, the update is HOT.
BATCH = Statement(
    "wfl_batch",
    "WITH a AS (SELECT * FROM unnest(%b::text[], %b::int[], %b::int[], %b::bigint[], "
    "%b::float8[], %b::text[], %b::float8[], %b::bytea[], %b::bytea[]) "
    "AS a(id, old, seq, size, updated_at, state, wake_at, summary, data)), "
    "r AS (UPDATE wfl_runs w SET seq = a.seq, size = a.size, updated_at = a.updated_at, "
    "state = a.state, wake_at = a.wake_at, summary = a.summary, changed = " + CHANGED + " "
    "FROM a WHERE w.id = ANY(%b::text[]) AND w.id = a.id AND w.seq = a.old "
    "RETURNING w.id, a.old, a.data), "
    "i AS (INSERT INTO wfl_records (run_id, seq, data) SELECT id, old, data FROM r) "
    "SELECT id FROM r",
)


def tune_writer(conn: psycopg.Connection[Any]) -> None:
    """Settings of a connection that writes (the session; any other that runs BATCH).

    Its statements are prepared (psycopg prepares a query run 5 times), and PostgreSQL left
    to itself either re-plans a prepared statement at every call (while the plan for the
    actual arrays looks cheaper than the generic plan: measured, ~0.2 ms of server CPU of a
    ~0.7 ms group commit on a table of 2,000 or 50,000 runs) or keeps a generic plan that,
    for a small table, reads all of wfl_runs at every group commit (a hash join). Every
    statement this connection runs finds its rows by key, so: the generic plan always, and
    no sequential scan where an index can find the rows."""
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute("SET enable_seqscan = off")


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
            # an append of more than a row's bytes goes the careful way, in rows (in_rows)
            one_row = [r for r in first.values() if sum(map(len, r.data)) <= ROW_BYTES]
            written = write_batch(conn, one_row) if one_row else set()
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
    ids, olds, seqs, sizes, updated, states, wakes, summaries = ([] for _ in range(8))
    data: list[bytes] = []
    for request in batch:
        w = request.writer
        ids.append(w.run_id)
        olds.append(w.seq)
        seqs.append(request._seq)
        sizes.append(request._size)
        _, updated_at, state, _, wake_at, summary = request.values
        updated.append(updated_at)
        states.append(state)
        wakes.append(wake_at)
        summaries.append(summary)
        data.append(b"".join(request.data))
    packed_ids = text_array(ids)
    params = [packed_ids, int4_array(olds), int4_array(seqs), int8_array(sizes),
              float8_array(updated), text_array(states), float8_array(wakes),
              bytea_array(summaries), bytea_array(data), packed_ids]  # fmt: skip
    return set(column(BATCH.run(conn, params)))


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
            said = " ".join(str(self.error).split())  # (the server's error may span lines)
            raise LeaseLost(f"run {self.writer.run_id}: the write failed ({said})")
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
        self.known_size = rows_size(rows, len(records))  # = wfl_runs.size
        return records

    def fetch(self, conn: psycopg.Connection[Any], after: int) -> list[Record]:
        rows = conn.execute(
            "SELECT seq, data FROM wfl_records WHERE run_id = %s AND seq >= %s ORDER BY seq",
            (self.run_id, after),
        ).fetchall()
        return self._decoded(rows, after)

    def _decoded(self, rows: list[tuple[int, bytes]], first: int = 0) -> list[Record]:
        records, damage = self.store._decode(self.run_id, rows, first)
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
    """The records `data` (msgpack each) of run `run_id` from record `first` on: one row,
    or more if they are more than ROW_BYTES."""
    for at, part in in_rows(data):
        conn.execute(
            "INSERT INTO wfl_records (run_id, seq, data) VALUES (%s, %s, %s)",
            (run_id, first + at, b"".join(part)),
        )


ROW_BYTES = 32 * 1024 * 1024  # a row's records at most, but one (a value's limit is 1 GB)


def in_rows(data: list[bytes]) -> list[tuple[int, list[bytes]]]:
    """`data` (records) split into rows of at most ROW_BYTES (a bigger record alone): each
    row's records and the number of its first among them."""
    rows: list[tuple[int, list[bytes]]] = [(0, [])]
    size = 0
    for i, record in enumerate(data):
        if rows[-1][1] and size + len(record) > ROW_BYTES:
            rows.append((i, []))
            size = 0
        rows[-1][1].append(record)
        size += len(record)
    return rows


def journal_size(data: list[bytes]) -> int:
    """Bytes these records take as a new journal file (header + frames)."""
    return HEADER + sum(journal.FRAME_OVERHEAD + len(d) for d in data)


def rows_size(rows: list[tuple[int, bytes]], count: int) -> int:
    """journal_size of the `count` records these rows hold (a row: records back to back)."""
    return HEADER + journal.FRAME_OVERHEAD * count + sum(len(data) for _, data in rows)


def summary_values(state: RunState) -> tuple[Any, ...]:
    """created_at, updated_at, state, workflow, wake_at, summary: a run row's summary columns."""
    from wfl.index import RunSummary

    summary = RunSummary.of(state)
    # times are floats (RunState makes them so): a binary array's elements share one type
    return (summary.created_at, summary.updated_at, summary.status["state"], state.workflow,
            summary.wake_at, pg_summary.pack(summary))  # fmt: skip


def summary_params(state: RunState) -> list[bytes | None]:
    """summary_values as parameters of a pg_raw.Statement: text, the summary itself binary."""
    *values, summary = summary_values(state)
    return [*map(text, values), summary]


def save_summary(
    conn: psycopg.Connection[Any], run_id: str, seq: int, size: int, state: RunState
) -> None:
    conn.execute(
        "UPDATE wfl_runs SET seq = %s, size = %s, created_at = %s, updated_at = %s, "
        "state = %s, workflow = %s, wake_at = %s, summary = %s, "
        "changed = " + CHANGED + " WHERE id = %s",
        (seq, size, *summary_values(state), run_id),
    )
