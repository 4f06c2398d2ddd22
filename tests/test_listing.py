"""Listing runs and reading the directory: stray files, the default
view of `wfl status`, option rules shared by the fast path and typer, and Client.list/wait."""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wfl import Client
from wfl.errors import InvalidArguments, WorkflowCanceled
from wfl.store import Store
from wfl.worker import Worker

FLOWS = Path(__file__).resolve().parent / "cli_flows"
QUICK = str(FLOWS / "quick.py")
EVENT = str(FLOWS / "event_wait.py")
WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"


def wfl(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WFL_DIR"}
    env.update(COLUMNS="200", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(
        [WFL, *args, "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=directory.parent,
    )


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stdout + r.stderr
    return r.stdout


def refused(r: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert r.returncode == code, f"{r.args} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


# -- stray *.journal files ------------------------------------------------------------------


def test_a_stray_journal_file_is_skipped_by_every_command(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    client = Client(d)
    done = client.start(QUICK)
    waiting = client.start(EVENT)
    stray = d / f"backup-{done}.journal"
    shutil.copy(d / f"{done}.journal", stray)

    table = wfl(d, "status")
    out = ok(table)
    assert done in out
    assert waiting in out
    assert "backup" not in out
    assert table.stderr.count(stray.name) == 1  # mentioned once
    listed = json.loads(ok(wfl(d, "status", "--json")))
    assert {r["id"] for r in listed} == {done, waiting}
    ok(wfl(d, "worker", "--once"))
    assert client.status(done).state == "completed"
    ok(wfl(d, "cleanup", "--finished"))
    assert [r.id for r in client.list()] == [waiting]
    assert stray.exists()  # not a run: never touched
    assert client.resolve(waiting[:8]) == waiting


def test_a_worker_rescan_passes_over_stray_files(tmp_path: Path) -> None:
    client = Client(tmp_path)
    run_id = client.start(QUICK)
    (tmp_path / "old-notes.journal").write_bytes(b"not mine")
    (tmp_path / "Backup.journal").write_bytes(b"")
    (tmp_path / "x\nabcdef012345.journal").write_bytes(b"")  # no line of a name is a run
    worker = Worker(client.store, listen=False)
    worker.scan()
    worker.rescan()  # raised InvalidRunId: a live worker exited at its next rescan
    assert Store(tmp_path).run_ids() == [run_id]
    assert Store(tmp_path).stray_files() == [
        "Backup.journal",
        "old-notes.journal",
        "x\nabcdef012345.journal",
    ]


# -- a journal left without its run record ------------------------------------------------


def test_a_crash_inside_start_leaves_no_journal_behind(tmp_path: Path) -> None:
    """SIGKILL `wfl start` as it writes the new journal: no empty run may appear."""
    script = (
        "import os, signal, sys\n"
        "from wfl import journal\n"
        "def crash(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "journal._write_all = crash\n"
        "from wfl import Client\n"
        f"Client(sys.argv[1]).start({QUICK!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert list(tmp_path.glob("*.journal")) == []
    assert Client(tmp_path).list() == []


# (a journal left empty by an older wfl's crash is no run: tests/test_unborn.py)


# -- Client.list and Client.wait ------------------------------------------------------------


@pytest.mark.parametrize("limit", [-1, 0, 2.5, "3", True])
def test_list_refuses_a_limit_that_is_not_a_positive_whole_number(
    tmp_path: Path, limit: object
) -> None:
    with pytest.raises(InvalidArguments, match="limit"):
        Client(tmp_path).list(limit=limit)  # type: ignore[arg-type]


def test_list_refuses_an_unknown_state(tmp_path: Path) -> None:
    with pytest.raises(InvalidArguments, match="in_progress, completed, failed, canceled"):
        Client(tmp_path).list(state="bogus")


def test_wait_on_a_canceled_run_raises_at_once_without_a_worker(tmp_path: Path) -> None:
    client = Client(tmp_path)
    run_id = client.start(EVENT)
    client.cancel(run_id)
    began = time.monotonic()
    with pytest.raises(WorkflowCanceled):
        client.wait(run_id, timeout=30)
    assert time.monotonic() - began < 5  # it used to wait out the whole timeout


def _nested_on_complete(run_id: str, result: dict[str, object], context: object) -> None:
    pass


@pytest.mark.parametrize(
    ("on_complete", "says"),
    [
        (functools.partial(_nested_on_complete, "x"), "functools.partial"),
        (print, "builtin_function_or_method"),
        (lambda run_id, result, context: None, "top level"),
    ],
)
def test_on_complete_must_be_a_module_level_function(
    tmp_path: Path, on_complete: object, says: str
) -> None:
    with pytest.raises(InvalidArguments, match=says):
        Client(tmp_path).start(QUICK, on_complete=on_complete)
    assert list(tmp_path.glob("*.journal")) == []


def test_a_nested_function_is_refused_as_on_complete(tmp_path: Path) -> None:
    def notify(run_id: str, result: dict[str, object], context: object) -> None:
        pass

    with pytest.raises(InvalidArguments, match="not defined at the top level"):
        Client(tmp_path).start(QUICK, on_complete=notify)


# -- wfl status: the default view, --all, --limit --------------------------------------------


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """53 runs, oldest first (created in-process: 53 `wfl start`s would cost seconds)."""
    d = tmp_path_factory.mktemp("many") / "runs"
    client = Client(d)
    return d, [client.start(QUICK, {"text": str(i)}) for i in range(53)]


def table_ids(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines() if line[:1].isalnum()][1:]


def test_status_shows_the_newest_50_and_says_how_to_see_the_rest(
    many: tuple[Path, list[str]],
) -> None:
    d, ids = many
    out = ok(wfl(d, "status"))
    assert table_ids(out) == ids[::-1][:50]
    assert "3 more runs (newest 50 shown): --limit N or --all to see them" in out


def test_status_all_and_limit_show_what_they_say(many: tuple[Path, list[str]]) -> None:
    d, ids = many
    out = ok(wfl(d, "status", "--all"))
    assert table_ids(out) == ids[::-1]
    assert "more run" not in out
    assert table_ids(ok(wfl(d, "status", "--limit", "2"))) == ids[::-1][:2]
    refused(wfl(d, "status", "--all", "--limit", "2"))


def test_status_json_without_limit_lists_every_run(many: tuple[Path, list[str]]) -> None:
    d, ids = many
    assert [r["id"] for r in json.loads(ok(wfl(d, "status", "--json")))] == ids[::-1]
    two = json.loads(ok(wfl(d, "status", "--json", "--limit", "2")))
    assert [r["id"] for r in two] == ids[::-1][:2]


def test_filtered_status_shows_the_newest_50_of_the_matches(
    many: tuple[Path, list[str]],
) -> None:
    d, ids = many
    out = ok(wfl(d, "status", "--state", "in_progress"))
    assert table_ids(out) == ids[::-1][:50]
    assert "3 more runs" in out


def typer_status(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`wfl status` through the typer app (the path taken when the fast path steps aside)."""
    code = "import sys; from wfl.cli import main; sys.argv[0] = 'wfl'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "status", *args, "--dir", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("limit", ["²", "٣", "0", "-1", "1.5", "x", " 2"])
def test_limit_is_refused_the_same_way_on_both_paths(tmp_path: Path, limit: str) -> None:
    fast = refused(wfl(tmp_path, "status", "--limit", limit))
    slow = refused(typer_status(tmp_path, "--limit", limit))
    assert fast == slow
    assert "--limit must be a whole number" in fast


def test_watch_json_prints_one_json_document_per_change(tmp_path: Path) -> None:
    d = tmp_path / "runs"
    client = Client(d)
    run_id = client.start(EVENT)
    env = {k: v for k, v in os.environ.items() if k != "WFL_DIR"}
    with subprocess.Popen(
        [WFL, "status", run_id, "--watch", "--json", "--dir", str(d)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as watcher:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert first["id"] == run_id
        assert first["state"] == "in_progress"
        ok(wfl(d, "worker", "--once"))  # the run now waits for its event: one step recorded
        client.send_event(run_id, "approved", True)
        ok(wfl(d, "worker", "--once"))
        rest, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    docs = [first] + [json.loads(line) for line in rest.splitlines()]
    assert docs[-1]["state"] == "completed"
    assert docs[-1]["result"] == {"approved": True}
    assert all(a != b for a, b in itertools.pairwise(docs))  # one per change


def _damage_index_entry(store: Store, run_id: str, *, summary: bytes | None = None,
                        text: str | None = None) -> None:  # fmt: skip
    """Replace one run's cached summary and/or JSON text, keeping its journal stamp (so the
    entry is trusted)."""
    from wfl import indexfile

    cache = indexfile.load(store)
    i = cache.positions()[run_id]
    entry = (cache.mtime[i], cache.size[i], cache.created[i],
             cache.packed(i) if summary is None else summary,
             cache.text(i) if text is None else text.encode())  # fmt: skip
    indexfile.save(store, cache, cache.ids, {run_id: entry})


def expected_json(client: Client, **filters: object) -> str:
    """What `wfl status --json` prints: SPEC §4's list, by json itself."""
    runs = [r.to_dict() for r in client.list(**filters)]  # type: ignore[arg-type]
    return json.dumps(runs, indent=2, default=repr) + "\n"


@pytest.mark.parametrize("newest", [2, None])
def test_an_index_entry_that_does_not_unpack_is_read_again_from_its_journal(
    tmp_path: Path, newest: int | None
) -> None:
    """The index packs each run's summary on its own (a listing of the newest 50 unpacks 50):
    a damaged one costs a journal read, never a wrong listing, in a listing of the newest
    runs and of all (which unpacks them in one pass)."""
    client = Client(tmp_path)
    ids = [client.start(QUICK, {"text": str(i)}) for i in range(3)]
    assert {s.id for s in client.store.summaries()} == set(ids)
    _damage_index_entry(client.store, ids[1], summary=b"\xc1 not msgpack")
    listed = {s.id: s.status["args"] for s in client.store.summaries(newest=newest)}
    assert listed == {ids[2]: {"text": "2"}, ids[1]: {"text": "1"}} | (
        {ids[0]: {"text": "0"}} if newest is None else {}
    )


def test_an_index_entry_holding_another_runs_summary_is_not_believed(tmp_path: Path) -> None:
    """Bytes that unpack, but as the wrong run (a damaged index can shift where one summary
    ends), are caught by the run id every summary carries."""
    from wfl import indexfile

    client = Client(tmp_path)
    ids = [client.start(QUICK, {"text": str(i)}) for i in range(3)]
    client.store.summaries()
    cache = indexfile.load(client.store)
    other = cache.packed(cache.positions()[ids[0]])
    _damage_index_entry(client.store, ids[1], summary=other)
    for newest in (None, 3):
        listed = {s.id: s.status["args"] for s in client.store.summaries(newest=newest)}
        assert listed == {r: {"text": str(i)} for i, r in enumerate(ids)}


def test_status_json_is_what_json_writes_and_a_damaged_cached_text_is_rebuilt(
    tmp_path: Path,
) -> None:
    """`wfl status --json` copies each run's JSON from the index (no decoding, no encoding):
    the text is json.dumps's, byte for byte, also for text JSON must escape; a cached text
    that is damaged or names another run is made again from the run's summary."""
    client = Client(tmp_path)
    args = [{"text": "plain"}, {"text": 'é ☃ \u2028 "q" \\'}, {"text": "x" * 300}]
    ids = [client.start(QUICK, a) for a in args]
    assert ok(wfl(tmp_path, "status", "--json")) == expected_json(client)
    assert ok(wfl(tmp_path, "status", "--json", "--limit", "2")) == expected_json(client, limit=2)
    assert ok(wfl(tmp_path, "status", "--json", "--state", "in_progress")) == expected_json(
        client, state="in_progress"
    )
    _damage_index_entry(client.store, ids[0], text="{garbage")
    _damage_index_entry(client.store, ids[1], text=f'{{\n    "id": "{ids[2]}"}}')
    assert ok(wfl(tmp_path, "status", "--json")) == expected_json(client)
    assert ok(wfl(tmp_path, "status", "--json", "--limit", "3")) == expected_json(client)
    assert ok(wfl(tmp_path, "status", "--json", "--workflow", "nope")) == "[]\n"
    (tmp_path / "index").unlink()
    assert ok(wfl(tmp_path, "status", "--json")) == expected_json(client)


def _summary(n: int, workflow: str = "quick", current: str = "", state: str = "in_progress"):  # type: ignore[no-untyped-def]
    from wfl.index import RunSummary

    status = {"id": f"{n:012x}", "workflow": workflow, "state": state,
              "created_at": "2026-01-01T00:00:00.000+00:00",
              "next_wake_at": "2099-01-01T00:00:00.000+00:00"}  # fmt: skip
    return RunSummary(status["id"], status, 0.0, 0.0, None, n % 3, 3, current)


@pytest.mark.parametrize(
    "runs",
    [
        [],
        [_summary(i) for i in range(5)],
        [_summary(1, state="completed"), _summary(2, current="2 send (scheduled)")],
        [_summary(1, workflow="wide" * 40)],  # wider than 160 columns: rich folds it
        [_summary(i, workflow="wide" * 40) for i in range(300)],  # as wide, but 301 lines
        [_summary(1, workflow="café ☃"), _summary(2)],  # not ASCII: rich measures it
    ],
)
@pytest.mark.parametrize("more", [0, 1, 1234])
def test_the_run_table_off_a_terminal_is_what_rich_prints(
    runs: list[object],
    more: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`wfl status` on a pipe lays the table out without importing rich: byte for byte what
    rich prints there (and rich still prints what the plain layout cannot)."""
    from wfl import runlist, views

    more = more if runs else 0
    printed = {}
    for plain in (False, True):
        monkeypatch.setattr(runlist, "plain_stdout", lambda plain=plain: plain)
        views.print_runs(runs, more=more)  # type: ignore[arg-type]
        printed[plain] = capsys.readouterr().out
    assert printed[True] == printed[False]
    assert printed[True].endswith("\n")


def test_plain_output_follows_richs_rules_for_what_is_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wfl import runlist

    monkeypatch.delitem(sys.modules, "wfl.render", raising=False)
    for name in ("TTY_COMPATIBLE", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert runlist.plain_stdout()
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert not runlist.plain_stdout()  # rich would colour it
    monkeypatch.setenv("FORCE_COLOR", "")
    assert runlist.plain_stdout()
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    assert not runlist.plain_stdout()
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert runlist.plain_stdout()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert not runlist.plain_stdout()
