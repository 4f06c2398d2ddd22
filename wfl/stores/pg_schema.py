"""The PostgreSQL store's tables, created on first use and versioned.

  wfl_meta     key -> value; "schema" holds the layout's version
  wfl_runs     one row per run: the summary a listing needs (so listing 100k runs reads no
               records), maintained in the same transaction as every append; `seq` counts
               the run's records, `size` is what they would take as a journal file,
               `changed` the quarter second (CHANGED: the server's clock) of its last
               write (a watcher asks "what changed since then?" with one indexed query)
  wfl_records  the append-only records of every run: (run id, seq) -> the records of one
               append (or a start), the msgpack maps a journal's frames hold, back to back;
               `seq` is the number of the row's first record in the run
  wfl_keys     idempotency key -> the run holding it (SPEC §8)
  wfl_schedules  schedule name -> its msgpack document (SPEC §8)
  wfl_notes    (kind, key) -> a JSON document: workers' notes for `wfl status --why`

Versions: 1 the first; 2 adds wfl_notes and drops an index on wake_at that no query used
(every append updated it); 3 makes the update of a run's row at each append a HOT update
(PostgreSQL writes the new row version on the same page and touches no index): wfl_runs
leaves 30% of each page free (fillfactor), and `changed` is the quarter second of the last
write rather than a sequence number, so it changes (an index entry) once per quarter second
of a run's life rather than at every append. Measured: ~15% less server CPU per group
commit, ~15% less WAL. (wfl_change_seq stays in a migrated schema, for workers of version
2 still running.) 4 keeps an append's records in one row of wfl_records (they were a row
each): per append one heap tuple and one index entry instead of one per record, measured ~25%
less WAL per append. Nothing is rewritten: a row of version 3 holds one record, which is a row
of version 4 too; but a wfl of version 3 would read a row of several records as damage, so
it refuses version 4 (stop older workers before starting newer ones on a database).

A newer wfl migrates an older schema (MIGRATIONS, applied in order under a lock); an older
wfl refuses a newer schema with one line.
"""

from __future__ import annotations

from typing import Any

from wfl.errors import StoreVersionError

SCHEMA_VERSION = 4
SCHEMA_LOCK = 0x77666C5F736368  # advisory lock key held while creating or migrating

# what a row of wfl_records holds (version 4; the table's comment says it to a DBA)
RECORDS = "the records of one append back to back (msgpack); seq is the number of its first"

CREATE = f"""
CREATE TABLE IF NOT EXISTS wfl_runs (
    id          text COLLATE "C" PRIMARY KEY,
    seq         integer NOT NULL,
    size        bigint NOT NULL,
    created_at  double precision NOT NULL,
    updated_at  double precision NOT NULL,
    state       text NOT NULL,
    workflow    text NOT NULL,
    wake_at     double precision,
    summary     bytea NOT NULL,
    changed     bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 70);
CREATE INDEX IF NOT EXISTS wfl_runs_changed ON wfl_runs (changed);
CREATE INDEX IF NOT EXISTS wfl_runs_created ON wfl_runs (created_at DESC);
CREATE TABLE IF NOT EXISTS wfl_keys (
    key     text PRIMARY KEY,
    run_id  text COLLATE "C" NOT NULL
);
CREATE TABLE IF NOT EXISTS wfl_schedules (
    name    text PRIMARY KEY,
    data    bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS wfl_notes (
    kind    text NOT NULL,
    key     text NOT NULL,
    data    text NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS wfl_records (
    run_id  text COLLATE "C" NOT NULL,
    seq     integer NOT NULL,
    data    bytea NOT NULL,
    PRIMARY KEY (run_id, seq)
);
COMMENT ON TABLE wfl_records IS '{RECORDS}';
"""

# version -> statements taking a schema of that version to the next one
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE IF NOT EXISTS wfl_notes (
    kind    text NOT NULL,
    key     text NOT NULL,
    data    text NOT NULL,
    PRIMARY KEY (kind, key)
);
DROP INDEX IF EXISTS wfl_runs_wake;
""",
    2: """
ALTER TABLE wfl_runs SET (fillfactor = 70);
""",
    3: f"COMMENT ON TABLE wfl_records IS '{RECORDS}';",  # rows stay as they are (see above)
}

# The value of wfl_runs.changed a write gives: the server's clock (one clock for every
# machine) in quarter seconds. A run's appends within a quarter second leave it as it is,
# which keeps their updates HOT (see the module docstring).
CHANGED = "(extract(epoch FROM statement_timestamp()) * 4)::bigint"
CHANGED_SLACK = 2  # quarter seconds a watcher looks back: a write's statement began before
# its commit, so a watcher may see it commit with a `changed` older than the watcher's last look


def ensure(conn: Any, where: str) -> None:
    """Create or migrate the schema on `conn` (autocommit), or refuse a newer one."""
    version = _version(conn)
    if version == SCHEMA_VERSION:
        return
    if version is not None and version > SCHEMA_VERSION:
        raise_newer(version, where)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS wfl_meta (key text PRIMARY KEY, value text)")
        version = _version(conn)  # another process may have done it while we waited
        if version is None:
            conn.execute(CREATE)
        elif version > SCHEMA_VERSION:
            raise_newer(version, where)
        else:
            while version < SCHEMA_VERSION:
                conn.execute(MIGRATIONS[version])
                version += 1
        conn.execute(
            "INSERT INTO wfl_meta VALUES ('schema', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (str(SCHEMA_VERSION),),
        )


def _version(conn: Any) -> int | None:
    row = conn.execute("SELECT to_regclass('wfl_meta') IS NOT NULL").fetchone()
    if not row[0]:
        return None
    row = conn.execute("SELECT value FROM wfl_meta WHERE key = 'schema'").fetchone()
    return int(row[0]) if row else None


def raise_newer(version: int, where: str) -> None:
    raise StoreVersionError(
        f"store {where} has schema version {version}, newer than this wfl knows "
        f"({SCHEMA_VERSION}): upgrade wfl to use it"
    )
