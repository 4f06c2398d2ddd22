"""The Store protocol: everything the engine, the client, the CLI and the UI ask of a store.

A store holds runs. Each run is an append-only list of records (the msgpack maps of
`records.py`); nothing else is the source of truth. Two implementations: the journal directory
(`wfl.store.FileStore`, the embedded default) and PostgreSQL (`wfl.stores.postgres`). Nobody
outside a store asks which one it has.

Guarantees every implementation gives:
- A record an append returns from is durable (survives kill -9 and power loss); several
  records handed to one append share one commit (group commit).
- Appends to one run are serialized across processes; an append returns the records others
  appended since this writer last looked, which precede its own.
- A lease excludes every other worker from driving the run and ends when its holder dies.
- `notify` reaches every listener of the store, on any machine that shares it.
- A store that cannot be reached raises StoreUnavailable (a worker then drops its leases,
  starts nothing and reconnects); a bad store spec raises InvalidArguments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from wfl.records import Record

if TYPE_CHECKING:
    from wfl.errors import JournalCorrupt
    from wfl.index import RunSummary

Decide = Callable[[list[Record]], list[Record]]


class RunWriter(Protocol):
    """Appends to one run; held by the worker that leases the run. Thread-safe."""

    def read_all(self) -> list[Record]:
        """Every record of the run; must come before the first append or poll."""
        ...

    def append_frames(self, payload: bytes, *, sync: bool = True) -> list[Record]:
        """Append records framed by `journal.frame()` (durably when `sync`); returns the
        records others appended since this writer last looked. Raises LeaseLost when the
        store can no longer prove this worker holds the run's lease."""
        ...

    def poll(self) -> list[Record]:
        """Records others appended since this writer last looked."""
        ...

    def size(self) -> int:
        """Bytes the run's records take as a journal (what `journal_limit` bounds)."""
        ...

    def close(self) -> None: ...


Batch = tuple[RunWriter, bytes]  # a writer and records framed by `journal.frame()`
BatchResult = list[Record] | BaseException  # what others appended before it, or its failure


class GroupCommit(Protocol):
    """What a store offers the worker's durability service (wfl/commit.py) to make several
    runs' records durable in one commit: a directory writes them all and syncs once,
    PostgreSQL could commit them in one transaction. Optional: a store without it gets each
    writer's `append_frames` called in parallel I/O threads."""

    def append_many(self, batches: Sequence[Batch]) -> list[BatchResult]:
        """Append each batch durably, all together; per batch (in order) the records others
        appended since its writer last looked (as `append_frames` returns them), or the
        exception that batch met: the other batches are still committed."""
        ...


class GroupWrite(Protocol):
    """append_many in three parts (GroupCommit.begin_many, optional): the store writes the
    batches when it is created (cheap: the worker does it on its loop thread), `sync` makes
    them durable (blocking: called in an I/O thread), `finish` says per batch what happened
    (on the loop thread again)."""

    @property
    def written(self) -> bool:
        """Whether there is anything to sync (else `sync` need not be called)."""
        ...

    def sync(self) -> None: ...

    def finish(self, error: BaseException | None = None) -> list[BatchResult]:
        """Per batch, as append_many; `error`: what sync() raised (nothing is durable)."""
        ...


def append_each(batches: Sequence[Batch]) -> list[BatchResult]:
    """The default `append_many`: each batch on its own, one commit each."""
    results: list[BatchResult] = []
    for writer, payload in batches:
        try:
            results.append(writer.append_frames(payload))
        except Exception as exc:
            results.append(exc)
    return results


class Lease(Protocol):
    def release(self) -> None: ...


class LeasePending:
    """What a store's optional lease_soon(run_id, then) answers when the attempt is made
    later: `then` gets its outcome (a Lease, None, or the exception it met), from another
    thread. A store whose lease attempts can wait behind its own writes (PostgreSQL) offers
    lease_soon so that a worker's event loop does not wait; others need not."""


class Listener(Protocol):
    """News from other processes: ids of runs that were started, canceled, sent an event..."""

    def fileno(self) -> int:
        """Readable when news may be waiting (for the event loop's add_reader)."""
        ...

    def drain(self) -> list[str]:
        """Run ids with news since the last drain; never blocks. Raises StoreUnavailable."""
        ...

    def close(self) -> None: ...


class Notes(Protocol):
    """Small JSON documents by kind and key, that workers leave for `wfl status --why`
    (wfl/codestate.py says which). Kind "workers" is keyed by a live worker's listener name
    (`Store.listen`): a note is written only while that worker listens, and `all` gives only
    live workers' notes."""

    def get(self, kind: str, key: str) -> dict[str, Any] | None: ...

    def put(self, kind: str, key: str, value: dict[str, Any]) -> None:
        """Replace the note whole (readers never see half of one); best effort: a store
        that cannot take it (read-only, unreachable) drops it, the log still says it."""
        ...

    def delete(self, kind: str, key: str) -> None: ...

    def all(self, kind: str) -> list[dict[str, Any]]: ...


class Store(Protocol):
    """A place that holds runs. See the module docstring for what every store guarantees."""

    @property
    def spec(self) -> str:
        """The store as a user names it, safe to print (a URL's password is `***`)."""
        ...

    @property
    def io_threads(self) -> int:
        """Threads a worker gives to this store's writes: a directory fsyncs each journal
        on its own; PostgreSQL commits the appends queued meanwhile together, so more
        waiting writers make bigger group commits."""
        ...

    @property
    def notes(self) -> Notes | None:
        """Where workers leave small notes for `wfl status --why` (code they could not load,
        code changed under them); None: this store keeps none."""
        ...

    def ensure(self) -> None:
        """Create what the store needs (a directory, a schema) if it is missing."""
        ...

    def close(self) -> None:
        """Give back connections and descriptors (the store may be used again after)."""
        ...

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        make_records: Callable[[str], list[Record]],
        *,
        run_id: str | None = None,
        key: str | None = None,
    ) -> str:
        """Create a run under a fresh id (or `run_id`, unless that run exists: then nothing
        happens); `make_records(run_id)` gives its first records. Returns the id. With `key`
        (an idempotency key): if a run holds the key, create nothing and return its id; one
        run per key, whatever processes race."""
        ...

    def run_for_key(self, key: str) -> str | None:
        """The id of the run holding `key`, or None."""
        ...

    def free_key(self, key: str, run_id: str) -> None:
        """Release `key` if `run_id` holds it (cleanup: a later start gets a new run)."""
        ...

    # -- schedules (SPEC §8): documents by name ---------------------------------------------

    def add_schedule(self, data: dict[str, Any]) -> None:
        """Store a new schedule (`data["name"]`); ScheduleExists if the name is taken."""
        ...

    def schedules(self) -> list[dict[str, Any]]: ...

    def schedule(self, name: str) -> dict[str, Any]:
        """ScheduleNotFound if there is none."""
        ...

    def update_schedule(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        """Read-modify-write one schedule under its lock; `change` returns the new content
        (None: leave it). Returns what is stored afterwards."""
        ...

    def remove_schedule(self, name: str) -> None: ...

    def notify_schedules(self) -> None:
        """Tell every live worker to look at the schedules again."""
        ...

    def exists(self, run_id: str) -> bool: ...

    def run_ids(self) -> list[str]: ...

    def stray_files(self) -> list[str]:
        """Things in the store that look like runs but are none (a directory's *.journal
        files whose names are no run ids); listed so commands can say they were skipped."""
        ...

    def resolve(self, prefix: str) -> str:
        """The one run id starting with `prefix` (RunNotFound, AmbiguousRunId)."""
        ...

    def read(self, run_id: str) -> list[Record]:
        """Every record of the run (RunNotFound; JournalCorrupt if it is damaged)."""
        ...

    def read_damaged(self, run_id: str) -> tuple[list[Record], JournalCorrupt | None]:
        """The records, or for a damaged run the good ones before the damage and why."""
        ...

    def update(self, run_id: str, decide: Decide) -> list[Record]:
        """Under the run's lock: read every record, let `decide` return what to append (it
        may raise to refuse), append that durably. Returns the appended records."""
        ...

    def delete(self, run_id: str, *, check: Callable[[list[Record]], None] | None = None) -> None:
        """Delete the run. With `check`: only if check(records) does not raise, decided and
        done under the run's lock (an update waiting for it then finds no run)."""
        ...

    def writer(self, run_id: str) -> RunWriter:
        """A writer for a run this process leases (RunNotFound if it is gone)."""
        ...

    def summaries(self, *, newest: int | None = None, save: bool = True) -> list[RunSummary]:
        """A summary of every run (only the `newest` N by creation, if given), without
        reading every record of every run."""
        ...

    def versions(self) -> dict[str, object]:
        """Run id -> a value that changes whenever the run gets a record (a worker's safety
        net against lost wake-ups, and the UI's cheap change check)."""
        ...

    def modified_at(self, run_id: str) -> float:
        """When the run last changed (epoch seconds)."""
        ...

    # -- leases and workers -----------------------------------------------------------------

    def try_lease(self, run_id: str) -> Lease | None:
        """The run's lease if no other worker holds it, else None. Ends when we die."""
        ...

    def is_leased(self, run_id: str) -> bool: ...

    def workers_alive(self) -> bool:
        """Whether some worker serves this store now."""
        ...

    # -- wake-ups ---------------------------------------------------------------------------

    def notify(self, run_id: str, *, skip: str = "") -> None:
        """Tell every listener (but the one named `skip`) that `run_id` has news."""
        ...

    def listen(self, *, worker: bool = True) -> tuple[str, Listener] | None:
        """Start receiving news: (this listener's name, for `notify(skip=)`, and the
        listener), or None when the store cannot push news (callers then rescan).
        `worker=False` listens without counting as a live worker (a UI, a watcher)."""
        ...
