"""Run ids, prefixes and the rebuildable run index."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wfl import Client, index, journal
from wfl.errors import AmbiguousRunId, InvalidRunId, RunNotFound
from wfl.store import FileStore as Store

FLOW = str(Path(__file__).resolve().parent / "cli_flows" / "quick.py")


@pytest.mark.parametrize(
    "bad", ["../..", "..", "a/b", "/etc/passwd", "", "ABC", "a b", "x" * 65, "a\0b"]
)
def test_run_ids_that_could_escape_the_directory_are_refused(tmp_path: Path, bad: str) -> None:
    store = Store(tmp_path)
    with pytest.raises(InvalidRunId):
        store.journal_path(bad)
    with pytest.raises(InvalidRunId):
        store.resolve(bad)


def test_a_unique_prefix_resolves_and_an_ambiguous_one_is_refused(tmp_path: Path) -> None:
    client = Client(tmp_path)
    ids = [client.start(FLOW) for _ in range(40)]
    first = ids[0]
    assert client.resolve(first[:10]) == first
    by_char: dict[str, list[str]] = {}
    for run_id in ids:
        by_char.setdefault(run_id[0], []).append(run_id)
    shared = next(c for c, group in by_char.items() if len(group) > 1)
    with pytest.raises(AmbiguousRunId):
        client.resolve(shared)
    with pytest.raises(RunNotFound):
        client.resolve("zzzz")


def test_index_is_rebuilt_when_deleted_or_damaged(tmp_path: Path) -> None:
    client = Client(tmp_path)
    ids = {client.start(FLOW) for _ in range(3)}
    assert {s.id for s in index.summaries(client.store)} == ids
    (tmp_path / "index").write_bytes(b"\xc1 not msgpack")
    assert {s.id for s in index.summaries(client.store)} == ids
    whole = (tmp_path / "index").read_bytes()
    for cut in (len(whole) - 1, len(whole) // 2, 20):  # the layout does not add up: rebuilt
        (tmp_path / "index").write_bytes(whole[:cut])
        assert {s.id for s in index.summaries(client.store)} == ids
        assert {s.id for s in index.summaries(client.store, newest=2)} <= ids
    (tmp_path / "index").unlink()
    assert {s.id for s in index.summaries(client.store)} == ids
    assert (tmp_path / "index").exists()
    assert os.stat(tmp_path / "index").st_mode & 0o777 == 0o600


def test_index_entry_is_not_trusted_once_the_journal_changed(tmp_path: Path) -> None:
    client = Client(tmp_path)
    run_id = client.start(FLOW)
    assert [s.status["state"] for s in index.summaries(client.store)] == ["in_progress"]
    client.cancel(run_id)  # appends to the journal: size and mtime change
    assert [s.status["state"] for s in index.summaries(client.store)] == ["canceled"]


def test_index_never_hides_a_journal_it_has_not_seen(tmp_path: Path) -> None:
    client = Client(tmp_path)
    client.start(FLOW)
    index.summaries(client.store)
    late = client.start(FLOW)
    assert late in {s.id for s in index.summaries(client.store)}
    journal_path = client.store.journal_path(late)
    journal_path.unlink()
    assert late not in {s.id for s in index.summaries(client.store)}


def test_listing_reads_only_journals_that_changed(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client = Client(tmp_path)
    for _ in range(5):
        client.start(FLOW)
    index.summaries(client.store)
    reads: list[Path] = []
    real_read = journal.read

    def counting_read(path: Path) -> journal.ReadResult:
        reads.append(path)
        return real_read(path)

    monkeypatch.setattr(journal, "read", counting_read)
    assert len(client.list()) == 5
    assert reads == []


@pytest.mark.parametrize(
    ("argv", "banned"),
    [
        (["start", FLOW, "--arg", "text=hello"], ("typer", "rich", "asyncio", "pydantic")),
        (["status", "--json"], ("typer", "rich", "pydantic")),
        (["status", "--limit", "5"], ("typer", "pydantic")),
    ],
)
def test_hot_commands_do_not_import_heavy_modules(
    tmp_path: Path, argv: list[str], banned: tuple[str, ...]
) -> None:
    # `wfl start` and `wfl status` are parsed without typer, which costs more than their work
    code = (
        "import sys\n"
        f"sys.argv = ['wfl', *{argv!r}, '--dir', {str(tmp_path)!r}]\n"
        "from wfl.entry import main\n"
        "main()\n"
        f"loaded = [m for m in {banned!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_newest_listing_checks_only_the_newest_but_misses_no_change(tmp_path: Path) -> None:
    client = Client(tmp_path)
    ids = [client.start(FLOW) for _ in range(6)]  # created in this order
    assert [s.id for s in client.list(limit=3)] == ids[::-1][:3]
    client.cancel(ids[-1])  # a change to a listed run is seen
    assert client.list(limit=1)[0].state == "canceled"
    newer = client.start(FLOW)  # a run the index has not seen comes first
    assert [s.id for s in client.list(limit=2)] == [newer, ids[-1]]
    client.store.journal_path(newer).unlink()  # a deleted one is gone
    assert [s.id for s in client.list(limit=1)] == [ids[-1]]
    # the rest of the index survived the partial looks: a full listing reads nothing
    assert len(index.summaries(client.store)) == 6
