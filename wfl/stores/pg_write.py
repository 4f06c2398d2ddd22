"""The PostgreSQL store's write path: a leased run's writer, the appends that wait for a
group commit, and the rows one append writes (records, then the run's summary row, in the
same transaction). See postgres.py for the session and the group commit itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wfl import journal
from wfl.errors import LeaseLost, RunNotFound, StoreUnavailable
from wfl.records import Record
from wfl.state import RunState

if TYPE_CHECKING:
    import psycopg

    from wfl.stores.postgres import PostgresStore

HEADER = len(journal.MAGIC)


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
        self._cursor: psycopg.Cursor[Any] | None = None

    def send(self, conn: psycopg.Connection[Any]) -> None:
        """(Pipelined, inside the batch's transaction) the common case in one statement: no
        one else appended since this writer last looked, so the run's row still has our
        `seq`: insert the records and update the summary row together. `check` tells."""
        w = self.writer
        for data in self.data:
            w.state.apply(journal.decode(data))
        self._seq = w.seq + len(self.data)
        self._size = w.known_size + journal_size(self.data) - HEADER
        values = summary_values(w.state)
        self._cursor = conn.cursor()
        self._cursor.execute(
            "WITH r AS (UPDATE wfl_runs SET seq = %s, size = %s, created_at = %s, "
            "updated_at = %s, state = %s, workflow = %s, wake_at = %s, summary = %s, "
            "changed = nextval('wfl_change_seq') WHERE id = %s AND seq = %s RETURNING id) "
            "INSERT INTO wfl_records (run_id, seq, data) "
            "SELECT r.id, u.seq, u.data FROM r, unnest(%s::int[], %s::bytea[]) AS u(seq, data)",
            (self._seq, self._size, *values, w.run_id, w.seq,
             list(range(w.seq, self._seq)), self.data),
        )  # fmt: skip

    def sent(self) -> bool:
        """Whether send() wrote the records (else others had appended: see check())."""
        assert self._cursor is not None
        return self._cursor.rowcount == len(self.data)

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
        with self.store.reads() as conn:
            row = conn.execute("SELECT size FROM wfl_runs WHERE id = %s", (self.run_id,)).fetchone()
            if row is None:
                raise RunNotFound(self.run_id)
            records = self.fetch(conn, 0)
        self.state = RunState.from_records(records)
        self.seq = len(records)
        self.known_size = int(row[0])
        return records

    def fetch(self, conn: psycopg.Connection[Any], after: int) -> list[Record]:
        rows = conn.execute(
            "SELECT seq, data FROM wfl_records WHERE run_id = %s AND seq >= %s ORDER BY seq",
            (self.run_id, after),
        ).fetchall()
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
