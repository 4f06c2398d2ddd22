"""Choosing a store (SPEC §7): --store, Client(store=), $WFL_STORE, $WFL_DIR, ./.wfl; file:
and postgresql:// specs; passwords never printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wfl import Client
from wfl.errors import InvalidArguments, StoreUnavailable
from wfl.store import FileStore
from wfl.stores import mask, open_store

REPO = Path(__file__).resolve().parent.parent
GREETING = str(REPO / "sample_flows" / "greeting.py")
WFL = str(Path(sys.executable).parent / "wfl")


def run_wfl(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("WFL_DIR", "WFL_STORE")}
    full.update(env or {})
    return subprocess.run(
        [WFL, *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=60
    )


def test_store_precedence_is_argument_then_wfl_store_then_wfl_dir_then_dot_wfl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WFL_STORE", raising=False)
    monkeypatch.delenv("WFL_DIR", raising=False)
    assert Client().dir == str(tmp_path / ".wfl")
    monkeypatch.setenv("WFL_DIR", str(tmp_path / "d"))
    assert Client().dir == str(tmp_path / "d")
    monkeypatch.setenv("WFL_STORE", f"file:{tmp_path / 's'}")
    assert Client().dir == str(tmp_path / "s")
    assert Client(store=str(tmp_path / "a")).dir == str(tmp_path / "a")
    assert Client(tmp_path / "b").dir == str(tmp_path / "b")  # --dir is --store PATH


def test_store_and_dir_together_are_refused() -> None:
    with pytest.raises(InvalidArguments, match="not both"):
        Client("x", store="y")


def test_file_specs_name_directories(tmp_path: Path) -> None:
    for spec in (str(tmp_path), f"file:{tmp_path}", f"file://{tmp_path}"):
        store = open_store(spec)
        assert isinstance(store, FileStore)
        assert store.dir == tmp_path
    with pytest.raises(InvalidArguments, match="unknown store"):
        open_store("mysql://u:pw@h/db")


def test_cli_store_flag_beats_environment_and_dir_with_store_is_exit_2(tmp_path: Path) -> None:
    env = {"WFL_STORE": str(tmp_path / "env"), "WFL_DIR": str(tmp_path / "dir")}
    flag = f"file:{tmp_path / 'flag'}"
    started = run_wfl("start", GREETING, "--arg", "name=A", "--store", flag, cwd=tmp_path, env=env)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    assert (tmp_path / "flag" / f"{run_id}.journal").exists()
    started = run_wfl("start", GREETING, "--arg", "name=Ada", cwd=tmp_path, env=env)
    assert (tmp_path / "env" / f"{started.stdout.strip()}.journal").exists()
    for command in (["status"], ["start", GREETING], ["cancel", run_id], ["worker", "--once"]):
        done = run_wfl(*command, "--store", "a", "--dir", "b", cwd=tmp_path)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.count("\n") == 1
        assert "not both" in done.stderr
        assert "Traceback" not in done.stderr


def test_mask_hides_url_passwords() -> None:
    assert mask("postgresql://wfl:s3cret@db:5432/wfl") == "postgresql://wfl:***@db:5432/wfl"
    assert mask("postgresql://wfl@db/wfl?password=s3cret&sslmode=require") == (
        "postgresql://wfl@db/wfl?password=***&sslmode=require"
    )
    assert mask("postgresql://wfl@db/wfl") == "postgresql://wfl@db/wfl"


def test_a_password_is_never_printed(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = "postgresql://wfl:hunter2secret@127.0.0.1:1/wfl?connect_timeout=2"
    with pytest.raises(StoreUnavailable) as caught:
        Client(store=url).list()
    assert "hunter2secret" not in str(caught.value)
    assert "wfl:***@" in str(caught.value)
    for command in (
        ["status"],
        ["start", GREETING, "--arg", "name=1"],
        ["status", "--json"],
        ["show", "abc"],
    ):
        done = run_wfl(*command, "--store", url, cwd=tmp_path)
        assert done.returncode == 2, done
        assert "hunter2secret" not in done.stdout + done.stderr
        assert "postgresql://wfl:***@127.0.0.1:1/wfl" in done.stderr
        assert done.stderr.count("\n") == 1
    worker = run_wfl("worker", "--once", cwd=tmp_path, env={"WFL_STORE": url})
    assert worker.returncode == 2
    assert "hunter2secret" not in worker.stdout + worker.stderr
    assert "postgresql://wfl:***@127.0.0.1:1/wfl" in worker.stderr


def test_start_on_a_directory_does_not_import_psycopg(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        f"sys.argv = ['wfl', 'start', {GREETING!r}, '--arg', 'name=A', '--dir', '{tmp_path}']\n"
        "from wfl.entry import main\n"
        "try:\n    main()\nfinally:\n    assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_postgresql_store_without_psycopg_installed_is_one_line(tmp_path: Path) -> None:
    # `pip install wfl` has no psycopg (it is the `postgres` extra): every command must say
    # what to install, not print an ImportError traceback.
    shadow = tmp_path / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'psycopg'\")\n")
    env = {"PYTHONPATH": str(shadow.parent)}
    url = "postgresql://wfl:hunter2secret@127.0.0.1:1/wfl"
    for command in (
        ["status"],
        ["status", "--json"],
        ["start", GREETING, "--arg", "name=1"],
        ["worker", "--once"],
        ["show", "abc"],
    ):
        done = run_wfl(*command, "--store", url, cwd=tmp_path, env=env)
        assert done.returncode == 2, done
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert "pip install 'wfl[postgres]'" in done.stderr
        assert "hunter2secret" not in done.stdout + done.stderr
