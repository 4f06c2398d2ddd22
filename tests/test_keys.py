"""SPEC §8: idempotent starts (`key=` / `wfl start --key`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pattern_flows as pf
import pytest

from wfl import Client, WflError
from wfl.testing import WorkflowTestEnv

FLOWS = Path(pf.__file__).resolve()
WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or "wfl"


def test_a_taken_key_returns_the_existing_run_and_creates_nothing(
    wfl_env: WorkflowTestEnv,
) -> None:
    first = wfl_env.start(pf.report, {"kind": "a"}, key="order-42")
    again = wfl_env.start(pf.report, {"kind": "b"}, key="order-42")
    assert again == first
    assert len(wfl_env.client.list()) == 1
    assert wfl_env.status(first).key == "order-42"
    assert wfl_env.status(first).args == {"kind": "a"}
    wfl_env.run_until_idle()
    # whatever its state: a finished run still holds its key
    assert wfl_env.start(pf.report, key="order-42") == first
    assert wfl_env.start(pf.report, key="order-43") != first


def test_cleanup_frees_the_key(wfl_env: WorkflowTestEnv) -> None:
    first = wfl_env.run(pf.report, key="k") and wfl_env.client.list()[0].id
    assert wfl_env.client.cleanup(first) == [first]
    second = wfl_env.start(pf.report, key="k")
    assert second != first
    assert wfl_env.status(second).key == "k"


def test_a_crash_between_taking_the_key_and_publishing_the_run_is_finished_by_the_next_start(
    tmp_path: Path,
) -> None:
    client = Client(tmp_path)
    store = client.store
    run_id = client.start(pf.report, key="half")
    # undo the last move (journal into the directory), as if the starter died just before it
    os.rename(store.journal_path(run_id), store.dir / "keys" / f"{run_id}.pending")
    assert client.list() == []
    assert client.start(pf.report, key="half") == run_id
    assert [r.id for r in client.list()] == [run_id]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "1 to 200 characters"),
        ("x" * 201, "1 to 200 characters long, this one has 201"),
        ("a\nb", "control characters"),
        ("tab\there", "control characters"),
    ],
)
def test_bad_keys_are_refused(tmp_path: Path, key: str, message: str) -> None:
    with pytest.raises(WflError, match=message):
        Client(tmp_path).start(pf.report, key=key)
    assert not any(tmp_path.glob("*.journal"))


def test_key_files_are_private(tmp_path: Path) -> None:
    Client(tmp_path).start(pf.report, key="private")
    (key_file,) = (tmp_path / "keys").glob("*.key")
    assert key_file.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--key", "x" * 201], "a key is 1 to 200 characters long, this one has 201"),
        (["--key", "a\x07b"], "control characters"),
        (["--deadline", "soon"], "bad --deadline 'soon'"),
        (["--deadline", "0m"], "--deadline must be positive"),
        (["--deadline", "-5m"], "bad --deadline '-5m'"),
    ],
)
def test_wfl_start_bad_key_or_deadline_is_one_line_and_exit_2(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    proc = subprocess.run(
        [WFL, "start", f"{FLOWS}:report", *argv, "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
    assert not any(tmp_path.glob("*.journal"))


def test_wfl_start_key_twice_prints_the_same_id_and_status_shows_key_and_deadline(
    tmp_path: Path,
) -> None:
    def start() -> str:
        proc = subprocess.run(
            [WFL, "start", f"{FLOWS}:report", "--key", "nightly-2026-11-28", "--deadline",
             "30m", "--dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return proc.stdout.strip()

    first = start()
    assert start() == first
    st = Client(tmp_path).status(first)
    assert st.key == "nightly-2026-11-28"
    assert st.run_state.deadline == pytest.approx(st.run_state.created_at + 1800)
