"""`wfl migrate --from STORE --to STORE [--finished]`: copy runs between stores and verify them.

Runs are copied record for record (the same msgpack maps), under the same ids, and schedules
with them (unless --finished); the source is only read. Runs already in the target with the
same records are counted, not copied again; a run in the target with other records is left
alone and reported. Unfinished runs are copied only while no worker serves the source (a
worker could append to a run after its copy). A run's idempotency key moves with it (while
the source still holds it for that run: cleanup frees keys), unless the target holds the key
for another run (reported; the run is copied without it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import JournalCorrupt, RefusedOperation, RunNotFound, ScheduleExists
from .records import Record
from .state import RunState
from .stores.base import Store


@dataclass
class MigrateReport:
    copied: int = 0
    in_progress: int = 0  # of the copied runs
    already: int = 0  # in the target with the same records
    schedules: int = 0  # schedules copied (a schedule is copied unless the name is taken)
    keys: int = 0  # idempotency keys the target holds for the copied (or already there) runs
    problems: list[str] = field(default_factory=list)  # runs not copied, and why


def migrate(source: Store, target: Store, *, finished_only: bool = False) -> MigrateReport:
    if source.spec == target.spec:
        raise RefusedOperation(f"--from and --to name the same store ({source.spec})")
    if not finished_only and source.workers_alive():
        raise RefusedOperation(
            f"a worker serves {source.spec}: stop its workers before moving unfinished runs "
            "(or move only finished ones with --finished)"
        )
    target.ensure()
    report = MigrateReport()
    for run_id in sorted(source.run_ids()):
        try:
            records = source.read(run_id)
        except RunNotFound:
            continue  # cleaned up meanwhile
        except JournalCorrupt as exc:
            report.problems.append(f"{run_id}: not copied: {exc}")
            continue
        state = RunState.from_records(records)
        unfinished = state.end is None or state.next_wake_at() is not None
        if unfinished and finished_only:
            continue
        if unfinished and source.is_leased(run_id):
            report.problems.append(f"{run_id}: not copied: a worker is driving it")
            continue
        key = state.key if state.key and source.run_for_key(state.key) == run_id else None
        _copy(target, run_id, records, unfinished, key, report)
    if not finished_only:  # schedules start runs: they move with the unfinished work
        _copy_schedules(source, target, report)
    return report


def _copy_schedules(source: Store, target: Store, report: MigrateReport) -> None:
    for data in source.schedules():
        name = str(data["name"])
        try:
            target.add_schedule(data)
        except ScheduleExists:
            if target.schedule(name) != data:
                report.problems.append(f"schedule {name}: the target has another one by that name")
            continue
        if target.schedule(name) != data:
            report.problems.append(f"schedule {name}: the copy does not read back the same")
            continue
        report.schedules += 1
    if report.schedules:
        target.notify_schedules()


def _copy(
    target: Store,
    run_id: str,
    records: list[Record],
    unfinished: bool,
    key: str | None,
    report: MigrateReport,
) -> None:
    existed = target.exists(run_id)
    holder = target.run_for_key(key) if key is not None else None
    if key is not None and holder not in (None, run_id):
        report.problems.append(
            f"{run_id}: copied without its key {key!r}: the target holds it for run {holder}"
        )
        key = None
    if not existed or (key is not None and holder is None):
        created = target.create_run(lambda _id: records, run_id=run_id, key=key)
        if created != run_id:  # another run took the key meanwhile
            report.problems.append(
                f"{run_id}: copied without its key {key!r}: the target holds it for run {created}"
            )
            key = None
            target.create_run(lambda _id: records, run_id=run_id)
    try:
        copied = target.read(run_id)
    except (RunNotFound, JournalCorrupt) as exc:
        report.problems.append(f"{run_id}: the copy does not read back: {exc}")
        return
    if copied != records:
        why = "already there with other records" if existed else "the copy differs"
        report.problems.append(f"{run_id}: {why}; left as it is in the target")
        return
    if key is not None:
        if target.run_for_key(key) != run_id:
            report.problems.append(f"{run_id}: its key {key!r} does not read back")
            return
        report.keys += 1
    if existed:
        report.already += 1
        return
    report.copied += 1
    report.in_progress += unfinished
    if unfinished:
        target.notify(run_id)  # a worker of the target picks it up
