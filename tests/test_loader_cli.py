"""How `wfl` finds and imports user code, end to end with the real command (SPEC §1, §7):
flows inside packages, symlinks, edits, same-named neighbours, code that no worker can load,
and workers that keep (or reload) the code they loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from test_cli import WFL, Wfl, poll_status, wfl


@pytest.fixture
def cli(tmp_path: Path) -> Wfl:
    return Wfl(tmp_path)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def make_package(root: Path) -> Path:
    """proj/myapp: a package whose flow imports its package absolutely and relatively."""
    write(root / "myapp" / "__init__.py", "")
    write(root / "myapp" / "db.py", 'def save(n: int) -> str:\n    return f"saved {n}"\n')
    write(root / "myapp" / "helpers.py", "def double(n: int) -> int:\n    return 2 * n\n")
    return write(
        root / "myapp" / "flows.py",
        """
        from wfl import Step, WorkflowManager
        from myapp.db import save
        from .helpers import double

        workflow = WorkflowManager()

        @workflow.define
        async def pipeline(step: Step, n: int) -> str:
            doubled = await step.run_query(double, {"n": n})
            return await step.run_mutation(save, {"n": doubled})
        """,
    )


# -- §1: a flow inside a package imports as its package module ------------------------------


def test_a_flow_inside_a_package_imports_as_its_package_module(cli: Wfl) -> None:
    flows = make_package(cli.tmp / "proj")
    elsewhere = cli.tmp / "elsewhere"
    elsewhere.mkdir()
    runs = ["--dir", str(cli.dir)]
    r = wfl("run", f"{flows}:pipeline", "--arg", "n=4", *runs, cwd=elsewhere)
    assert (r.returncode, r.stdout) == (0, "saved 8\n"), r.stderr
    r = wfl("start", f"{flows}:pipeline", "--arg", "n=5", *runs, cwd=cli.tmp / "proj" / "myapp")
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    r = wfl("worker", "--once", *runs, cwd=elsewhere)  # a worker anywhere serves it
    assert r.returncode == 0, r.stderr
    assert cli.peek(run_id)["result"] == "saved 10"
    r = wfl("check", flows, *runs, cwd=elsewhere)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_symlinked_flow_imports_the_modules_beside_its_real_file(cli: Wfl) -> None:
    real = cli.tmp / "real"
    write(real / "helpers.py", 'def greet() -> str:\n    return "from the real folder"\n')
    write(
        real / "flow.py",
        """
        from helpers import greet
        from wfl import Step, WorkflowManager

        workflow = WorkflowManager()

        @workflow.define
        async def linked(step: Step) -> str:
            return await step.run_query(greet)
        """,
    )
    (cli.tmp / "links").mkdir()
    link = cli.tmp / "links" / "flow.py"
    link.symlink_to(real / "flow.py")
    assert cli.ok("run", link) == "from the real folder\n"
    run_id = cli.start(str(link))
    assert cli.peek(run_id)["flow"] == str(link)  # the path given stays its identity


def test_a_flow_edited_twice_within_a_second_to_the_same_size_runs_the_new_code(
    cli: Wfl,
) -> None:
    flow = cli.tmp / "edited.py"
    helper = cli.tmp / "edited_helper.py"
    source = """
        from edited_helper import word
        from wfl import Step, WorkflowManager

        workflow = WorkflowManager()

        @workflow.define
        async def edited(step: Step) -> str:
            return "flow-one " + await step.run_query(word)
        """
    write(flow, source)
    write(helper, 'def word() -> str:\n    return "helper-one"\n')
    stamp = (1_790_000_000, 1_790_000_000)  # both versions carry the same whole second
    os.utime(flow, stamp)
    os.utime(helper, stamp)
    env = {"PYTHONDONTWRITEBYTECODE": ""}  # let Python cache bytecode, as users' machines do
    r = wfl("run", flow, "--dir", cli.dir, cwd=cli.tmp, env=env)
    assert r.stdout == "flow-one helper-one\n", r.stderr
    assert list((cli.tmp / "__pycache__").glob("edited*.pyc"))  # there was a cache to trust
    write(flow, source.replace("flow-one", "flow-two"))
    write(helper, 'def word() -> str:\n    return "helper-two"\n')
    os.utime(flow, stamp)
    os.utime(helper, stamp)
    r = wfl("run", flow, "--dir", cli.dir, cwd=cli.tmp, env=env)
    assert r.stdout == "flow-two helper-two\n", r.stderr


def two_folders(tmp: Path) -> tuple[Path, Path]:
    flows = []
    for folder, word in (("billing", "billing"), ("shipping", "shipping")):
        write(tmp / folder / "helpers.py", f'def which() -> str:\n    return "{word}"\n')
        flows.append(
            write(
                tmp / folder / f"{folder}_flow.py",
                f"""
                import helpers
                from wfl import Step, WorkflowManager

                workflow = WorkflowManager()

                @workflow.define
                async def {folder}(step: Step) -> str:
                    return await step.run_query(helpers.which)
                """,
            )
        )
    return flows[0], flows[1]


def test_two_flow_folders_with_a_same_named_neighbour_do_not_share_it(cli: Wfl) -> None:
    billing, shipping = two_folders(cli.tmp)
    first = cli.start(str(billing))
    second = cli.start(str(shipping))
    cli.ok("worker", "--once", "--processes", "1")  # one worker process for both
    assert cli.peek(first)["result"] == "billing"
    st = cli.peek(second)
    assert st["state"] == "in_progress"  # refused, not run with billing's helpers
    assert st["result"] is None
    why = cli.why(second)
    assert "cannot load" in why
    assert "'helpers'" in why
    assert str(cli.tmp / "billing" / "helpers.py") in why
    assert "__init__.py" in why  # the fix: make each folder a package
    cli.drive()  # a worker process of its own serves it
    assert cli.peek(second)["result"] == "shipping"


# -- status --why: code no worker can load ---------------------------------------------------


def test_why_says_that_a_missing_flow_file_cannot_be_loaded(cli: Wfl) -> None:
    flow = write(
        cli.tmp / "gone.py",
        """
        from wfl import Step, WorkflowManager

        workflow = WorkflowManager()

        @workflow.define
        async def gone(step: Step) -> int:
            return 1
        """,
    )
    run_id = cli.start(str(flow))
    flow.unlink()
    why = cli.why(run_id)
    assert "no worker is running" not in why
    assert "cannot load" in why
    assert str(flow) in why
    assert "missing" in why
    assert "--app-dir" in why  # what to do
    cli.drive()
    assert cli.peek(run_id)["state"] == "in_progress"  # waits for its code, not failed
    why = cli.why(run_id)
    assert "cannot load" in why
    assert str(flow) in why


def test_why_names_the_error_of_a_flow_that_does_not_import(cli: Wfl) -> None:
    source = """
        from wfl import Step, WorkflowManager

        workflow = WorkflowManager()

        @workflow.define
        async def broken(step: Step) -> int:
            return 1
        """
    flow = write(cli.tmp / "broken.py", source)
    run_id = cli.start(str(flow))
    write(flow, source + "\nthis is not python\n")
    cli.drive()
    assert cli.peek(run_id)["state"] == "in_progress"
    why = cli.why(run_id)
    assert "cannot load" in why
    assert "SyntaxError" in why
    assert f"{flow}:" in why
    write(flow, source)  # fixed: the next worker runs it
    assert "has changed since" in cli.why(run_id)
    cli.drive()
    assert cli.peek(run_id)["state"] == "completed"
    assert "cannot load" not in cli.why(run_id)


# -- §7: runs record their module; workers resolve it on their own import path ----------------


def test_a_run_records_its_module_and_a_worker_with_the_code_elsewhere_serves_it(
    cli: Wfl,
) -> None:
    old = make_package(cli.tmp / "release1")
    run_id = cli.start(f"{old}:pipeline", "--arg", "n=2")
    assert cli.peek_records(run_id)[0]["module"] == "myapp.flows"
    assert cli.peek_records(run_id)[0]["flow"] == str(old)
    # the next release lives at another path; the old one is gone
    (cli.tmp / "release1").rename(cli.tmp / "release2")
    r = wfl("worker", "--once", "--dir", cli.dir, cwd=cli.tmp / "release2")  # cwd: the app
    assert r.returncode == 0, r.stderr
    assert cli.peek(run_id)["result"] == "saved 4"
    again = cli.start(str(cli.tmp / "release2" / "myapp" / "flows.py:pipeline"), "--arg", "n=3")
    (cli.tmp / "release2").rename(cli.tmp / "release3")
    why = cli.why(again)
    assert "myapp.flows" in why  # names the workflow no worker can load
    r = wfl("worker", "--once", "--app-dir", cli.tmp / "release3", "--dir", cli.dir, cwd=cli.tmp)
    assert r.returncode == 0, r.stderr
    assert cli.peek(again)["result"] == "saved 6"


def test_an_old_journal_without_a_module_still_loads_by_path(cli: Wfl) -> None:
    flow = make_package(cli.tmp / "proj")
    run_id = cli.start(f"{flow}:pipeline", "--arg", "n=1")
    from wfl import journal

    path = cli.dir / f"{run_id}.journal"
    records = journal.read(path).records
    del records[0]["module"]  # as wfl 0.1 wrote it
    path.unlink()
    journal.create(path, records)
    cli.drive()
    assert cli.peek(run_id)["result"] == "saved 2"


# -- workers: never a mix of old and new code ------------------------------------------------


MIXED_FLOW = """
from wfl import Step, WorkflowManager
from mixed_helper import word

workflow = WorkflowManager()

@workflow.define
async def mixed(step: Step) -> str:
    return "flow-VERSION " + await step.run_query(word)
"""


def mixed_code(tmp: Path, version: str) -> Path:
    write(tmp / "mixed_helper.py", f'def word() -> str:\n    return "helper-{version}"\n')
    return write(tmp / "mixed.py", MIXED_FLOW.replace("VERSION", version))


def spawn_worker(cli: Wfl, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "WFL_DIR"}
    log = (cli.tmp / "worker.log").open("a")
    return subprocess.Popen(
        [WFL, "worker", "--dir", str(cli.dir), *extra],
        cwd=cli.tmp,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finished(st: dict[str, Any]) -> bool:
    return bool(st["state"] != "in_progress")


@pytest.mark.slow
def test_a_running_worker_keeps_the_code_it_loaded_and_says_newer_code_waits(cli: Wfl) -> None:
    flow = mixed_code(cli.tmp, "1")
    proc = spawn_worker(cli, "--processes", "1")  # the code one process loaded
    try:
        first = cli.start(str(flow))
        assert poll_status(cli, first, finished)["result"] == "flow-1 helper-1"
        mixed_code(cli.tmp, "2")  # both files change
        second = cli.start(str(flow))
        assert poll_status(cli, second, finished)["result"] == "flow-1 helper-1"  # no mix
        deadline = time.monotonic() + 20
        while "newer code" not in (cli.tmp / "worker.log").read_text():
            assert time.monotonic() < deadline, (cli.tmp / "worker.log").read_text()
            time.sleep(0.05)  # the worker notices changes on its own schedule
        log = (cli.tmp / "worker.log").read_text()
        assert "mixed.py" in log
        assert "--reload" in log
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


@pytest.mark.slow
def test_worker_reload_restarts_on_changes_and_runs_only_new_code(cli: Wfl) -> None:
    flow = mixed_code(cli.tmp, "1")
    proc = spawn_worker(cli, "--reload")
    try:
        first = cli.start(str(flow))
        assert poll_status(cli, first, finished)["result"] == "flow-1 helper-1"
        mixed_code(cli.tmp, "2")
        deadline = time.monotonic() + 20
        while "restarting" not in (cli.tmp / "worker.log").read_text():
            assert time.monotonic() < deadline, (cli.tmp / "worker.log").read_text()
            time.sleep(0.05)
        second = cli.start(str(flow))
        assert poll_status(cli, second, finished)["result"] == "flow-2 helper-2"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    assert "Traceback" not in (cli.tmp / "worker.log").read_text()


# -- process start-up ------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_while_a_worker_starts_up_exits_0(cli: Wfl) -> None:
    # PYTHONVERBOSE makes the worker say which module it imports; SIGTERM arrives as it
    # imports its command's module, well before any handling of its own is in place.
    env = {k: v for k, v in os.environ.items() if k != "WFL_DIR"}
    env["PYTHONVERBOSE"] = "1"
    proc = subprocess.Popen(
        [WFL, "worker", "--dir", str(cli.dir)],
        cwd=cli.tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("# ") and "/wfl/workercmd" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=15) == 0, rest[-2000:]
    assert not (cli.dir / "workers").exists() or not any((cli.dir / "workers").iterdir())


def test_the_package_ships_py_typed(tmp_path: Path) -> None:
    # what setuptools puts in the wheel: build the package tree and look in it
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
         "--build-lib", str(tmp_path)],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "wfl" / "loader.py").is_file()
    assert (tmp_path / "wfl" / "py.typed").is_file()


def test_shell_completion_completes_commands_and_options(cli: Wfl) -> None:
    r = wfl("--show-completion", "bash", cwd=cli.tmp, env={"SHELL": "/bin/bash"})
    assert r.returncode == 0, r.stderr
    assert "_wfl_completion" in r.stdout
    env = {"_WFL_COMPLETE": "complete_bash", "COMP_WORDS": "wfl st", "COMP_CWORD": "1"}
    r = wfl(cwd=cli.tmp, env=env)
    assert r.stdout.split() == ["start", "status"], r.stderr
    env.update(COMP_WORDS="wfl worker --app", COMP_CWORD="2")
    assert wfl(cwd=cli.tmp, env=env).stdout.split() == ["--app-dir"]


def test_on_complete_is_found_by_module_too(cli: Wfl) -> None:
    flows = make_package(cli.tmp / "release1")
    with flows.open("a") as f:
        f.write(
            "\n\ndef notify(run_id: str, result: dict, context: object) -> None:\n"
            "    import pathlib\n"
            "    pathlib.Path(str(context)).write_text(str(result['return_value']))\n"
        )
    marker = cli.tmp / "notified.txt"
    run_id = cli.start(
        f"{flows}:pipeline", "--arg", "n=7", "--on-complete", f"{flows}:notify",
        "--context", json.dumps(str(marker)),
    )  # fmt: skip
    assert cli.peek_records(run_id)[0]["on_complete"][2] == "myapp.flows"
    (cli.tmp / "release1").rename(cli.tmp / "release2")
    r = wfl("worker", "--once", "--app-dir", cli.tmp / "release2", "--dir", cli.dir, cwd=cli.tmp)
    assert r.returncode == 0, r.stderr
    assert cli.peek(run_id)["result"] == "saved 14"
    assert marker.read_text() == "saved 14"


def test_check_of_a_release_in_a_new_directory_checks_the_runs_of_its_module(cli: Wfl) -> None:
    old = make_package(cli.tmp / "release1")
    source = old.read_text().replace('{"n": doubled})', '{"n": doubled}, run_after=3600)')
    old.write_text(source)
    run_id = cli.start(f"{old}:pipeline", "--arg", "n=1")
    cli.drive()  # step 0 recorded; step 1 waits an hour
    new = make_package(cli.tmp / "release2")
    new.write_text(source.replace("run_query(double", "run_query(save"))  # breaks step 0
    r = cli("check", new)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"FAIL {run_id}" in r.stdout
    new.write_text(source)
    r = cli("check", new)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok   {run_id}" in r.stdout


@pytest.mark.slow
def test_a_new_flow_is_not_loaded_beside_a_changed_neighbour_the_worker_holds(cli: Wfl) -> None:
    flow = mixed_code(cli.tmp, "1")
    other = write(
        cli.tmp / "other.py",
        MIXED_FLOW.replace("async def mixed", "async def other").replace("VERSION", "other"),
    )
    proc = spawn_worker(cli, "--processes", "1")  # the code one process loaded
    try:
        first = cli.start(str(flow))
        assert poll_status(cli, first, finished)["result"] == "flow-1 helper-1"
        write(cli.tmp / "mixed_helper.py", 'def word() -> str:\n    return "helper-2"\n')
        late = cli.start(str(other))  # first loaded now: it would get helper-1, not helper-2
        deadline = time.monotonic() + 20
        while "newer code" not in cli.why(late):
            assert time.monotonic() < deadline, cli.why(late)
            time.sleep(0.05)  # polling another process
        assert "mixed_helper.py" in cli.why(late)
        assert cli.peek(late)["state"] == "in_progress"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    cli.drive()  # a fresh worker runs it on the new code only
    assert cli.peek(late)["result"] == "flow-other helper-2"
