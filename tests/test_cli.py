"""End-to-end tests of the real `wfl` command (SPEC §3, §4, §5), in temp directories.

Every test runs the installed `wfl` executable in a subprocess. Runs are driven with
`wfl worker --once` (which never waits for a future timer), so nothing here sleeps to make a
test pass; the long-lived-worker tests (marked slow) poll a separate process with short pauses.

A wfl process costs about a quarter of a second, so tests that only read or are refused share
one directory of runs (`runs`, built once per module); tests that change runs get their own.
What a command did is read back in-process (`peek`) unless reading is what is tested.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FLOWS = Path(__file__).resolve().parent / "cli_flows"
GREETING = REPO / "sample_flows" / "greeting.py"
WFL = shutil.which("wfl", path=str(Path(sys.executable).parent)) or shutil.which("wfl") or "wfl"

SPEC_KEYS = {
    "id", "workflow", "flow", "state", "args", "result", "error", "created_at", "updated_at",
    "next_wake_at", "steps", "traceback",
    # §8, on every run (null when unused)
    "key", "deadline", "progress", "schedule", "scheduled_at", "continued_from", "continued_as",
}  # fmt: skip
SPEC_STEP_KEYS = {
    "step", "name", "kind", "state", "attempts", "run_at", "started_at", "finished_at", "error",
    "traceback",
}  # fmt: skip
RUN_ID = re.compile(r"^[0-9a-z]{6,64}$")


def flow(name: str) -> str:
    return str(FLOWS / f"{name}.py")


def wfl(
    *args: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run the real `wfl` command; WFL_DIR is unset unless `env` sets it."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("WFL_DIR", "WFL_STORE")}
    full_env.update(COLUMNS="250", PYTHONDONTWRITEBYTECODE="1")
    full_env.update(env or {})
    return subprocess.run(
        [WFL, *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Wfl:
    """`wfl` bound to one journal directory (passed as --dir)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.dir = tmp / "runs"

    def __call__(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return wfl(*args, "--dir", self.dir, cwd=self.tmp, timeout=timeout)

    def ok(self, *args: str | Path) -> str:
        r = self(*args)
        assert r.returncode == 0, f"wfl {args} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
        # no crash (a failed run's recorded traceback may be what stdout shows)
        assert "Traceback" not in r.stderr
        return r.stdout

    def start(self, target: str, *args: str) -> str:
        out = self.ok("start", target, *args)
        run_id = out.strip()
        assert RUN_ID.match(run_id), out
        return run_id

    def drive(self) -> None:
        self.ok("worker", "--once")

    def status(self, run_id: str) -> dict[str, Any]:
        return json.loads(self.ok("status", run_id, "--json"))

    def listing(self, *args: str) -> list[dict[str, Any]]:
        return json.loads(self.ok("status", "--json", *args))

    def records(self, run_id: str) -> list[dict[str, Any]]:
        return json.loads(self.ok("show", run_id, "--json"))

    def why(self, run_id: str) -> str:
        return self.ok("status", run_id, "--why").strip()

    def peek(self, run_id: str) -> dict[str, Any]:
        from wfl import Client

        return Client(self.dir).status(run_id).to_dict()

    def peek_records(self, run_id: str) -> list[dict[str, Any]]:
        from wfl import Client

        return Client(self.dir).store.read(run_id)

    def peek_ids(self) -> list[str]:
        from wfl import Client

        return sorted(st.id for st in Client(self.dir).list())

    def journals(self) -> dict[str, bytes]:
        """Every journal's bytes: compared before and after a refused command."""
        if not self.dir.is_dir():
            return {}
        return {p.name: p.read_bytes() for p in sorted(self.dir.glob("*.journal"))}


@pytest.fixture
def cli(tmp_path: Path) -> Wfl:
    return Wfl(tmp_path)


class Runs:
    """Ids of the shared runs, after one `wfl worker --once`."""

    def __init__(self, cli: Wfl) -> None:
        self.cli = cli
        self.done = cli.start(flow("quick"), "--arg", "text=hello")
        self.doubled = cli.start(flow("int_arg"), "--args-json", '{"n": 21}')
        self.failed = cli.start(flow("failing"))
        self.unserializable = cli.start(flow("unserializable"))
        self.big_result = cli.start(flow("big_result"))
        self.big_journal = cli.start(flow("big_journal"))
        self.event = cli.start(flow("event_wait"))
        self.timer = cli.start(flow("long_timer"))  # the newest
        cli.drive()

    @property
    def all(self) -> list[str]:
        return sorted(v for k, v in vars(self).items() if k != "cli")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(Wfl(tmp_path_factory.mktemp("shared")))


@pytest.fixture
def shared(runs: Runs) -> Iterator[Wfl]:
    """The shared directory, for tests that must leave it as they found it."""
    before = runs.cli.journals()
    yield runs.cli
    assert runs.cli.journals() == before


def one_error_line(r: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """A refused command: the exit code, one line on stderr, no traceback anywhere."""
    assert r.returncode == code, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("wfl: error: "), lines[0]
    return lines[0]


def refused(cli: Wfl, *args: str | Path, code: int = 2) -> str:
    """Run a command that must be refused without touching any journal."""
    before = cli.journals()
    line = one_error_line(cli(*args), code)
    assert cli.journals() == before
    return line


# -- happy paths ------------------------------------------------------------------------------


def test_run_greeting_prints_the_greeting_and_exits_0(cli: Wfl) -> None:
    r = cli("run", GREETING, "--arg", "name=James")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "The query says... Hi James! The action says... Hi back!\n"
    assert "Traceback" not in r.stderr
    (run_id,) = cli.peek_ids()
    run = cli.peek(run_id)
    assert (run["state"], run["args"]) == ("completed", {"name": "James"})


def test_run_prints_a_result_that_is_not_a_string_as_json(cli: Wfl) -> None:
    r = cli("run", flow("int_arg"), "--arg", "n=4")
    assert (r.returncode, r.stdout) == (0, "8\n"), r.stderr


def test_run_of_a_failing_flow_exits_1_with_the_error(cli: Wfl) -> None:
    r = cli("run", flow("failing"))
    assert r.returncode == 1, r.stderr
    assert "boom from the flow" in r.stderr.splitlines()[-1]
    # the user's traceback (SPEC §11), never one of wfl's own
    assert f'File "{flow("failing")}", line 9, in explode' in r.stderr
    assert f"{os.sep}wfl{os.sep}" not in r.stderr
    assert r.stdout == ""


def test_start_prints_only_the_run_id_and_records_an_in_progress_run(cli: Wfl) -> None:
    r = cli("start", flow("int_arg"), "--arg", "n=5")
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"[0-9a-z]+\n", r.stdout), r.stdout
    assert r.stderr == ""
    st = cli.status(r.stdout.strip())
    assert st["state"] == "in_progress"
    assert st["steps"] == []
    assert st["args"] == {"n": 5}  # coerced from the CLI string to the annotated int
    assert (st["workflow"], st["flow"]) == ("doubled", flow("int_arg"))
    assert "worker" in cli.why(r.stdout.strip())  # nothing ran yet: it needs a worker


def test_wfl_dir_environment_variable_selects_the_directory(tmp_path: Path) -> None:
    env = {"WFL_DIR": str(tmp_path / "envdir")}
    r = wfl("start", flow("quick"), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "envdir" / f"{r.stdout.strip()}.journal").is_file()
    listed = wfl("status", "--json", cwd=tmp_path, env=env)
    assert [run["id"] for run in json.loads(listed.stdout)] == [r.stdout.strip()]
    assert not (tmp_path / ".wfl").exists()


def test_default_directory_is_dot_wfl_in_the_working_directory(tmp_path: Path) -> None:
    r = wfl("start", flow("quick"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / ".wfl" / f"{r.stdout.strip()}.journal").is_file()


def test_worker_once_drives_due_runs_to_their_end(runs: Runs) -> None:
    cli = runs.cli
    assert (cli.peek(runs.done)["state"], cli.peek(runs.done)["result"]) == ("completed", "HELLO")
    st = cli.peek(runs.doubled)
    assert (st["state"], st["result"], st["args"]) == ("completed", 42, {"n": 21})
    assert [(s["name"], s["state"], s["attempts"]) for s in st["steps"]] == [("double", "done", 1)]
    assert cli.peek(runs.failed)["state"] == "failed"
    # it did not wait for the hour-long timer, nor for the event
    assert [s["state"] for s in cli.peek(runs.timer)["steps"]] == ["done", "scheduled"]
    assert cli.peek(runs.event)["state"] == "in_progress"


def test_status_table_lists_each_run(runs: Runs, shared: Wfl) -> None:
    lines = shared.ok("status").splitlines()
    assert "RUN" in lines[0]
    assert "STATE" in lines[0]
    assert "WORKFLOW" in lines[0]
    row = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert sorted(row) == runs.all
    assert "quick" in row[runs.done]
    assert "completed" in row[runs.done]
    assert "doomed" in row[runs.failed]
    assert "failed" in row[runs.failed]
    assert "patient" in row[runs.timer]
    assert "in_progress" in row[runs.timer]
    assert "later" in row[runs.timer]  # the current step


def test_status_json_has_exactly_the_spec_keys(runs: Runs, shared: Wfl) -> None:
    st = shared.status(runs.timer)
    assert set(st) == SPEC_KEYS
    assert (st["id"], st["workflow"], st["state"]) == (runs.timer, "patient", "in_progress")
    assert st["flow"] == flow("long_timer")
    assert st["next_wake_at"] is not None
    assert [s["name"] for s in st["steps"]] == ["prepare", "later"]
    for s in st["steps"]:
        assert set(s) == SPEC_STEP_KEYS
    assert [s["state"] for s in st["steps"]] == ["done", "scheduled"]
    assert [s["kind"] for s in st["steps"]] == ["query", "action"]
    assert st["steps"][0]["attempts"] == 1
    listed = shared.listing()
    assert sorted(r["id"] for r in listed) == runs.all
    for r in listed:
        assert set(r) in (SPEC_KEYS, SPEC_KEYS - {"steps", "traceback"})


def test_status_json_of_a_directory_that_does_not_exist_is_an_empty_list(cli: Wfl) -> None:
    r = cli("status", "--json")
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "[]", "")
    assert cli.ok("status").strip() == "no runs"
    assert not cli.dir.exists()  # reading creates nothing


def test_run_ids_may_be_abbreviated_to_a_unique_prefix(runs: Runs, shared: Wfl) -> None:
    others = [r for r in runs.all if r != runs.timer]
    size = next(n for n in range(1, 13) if not any(o.startswith(runs.timer[:n]) for o in others))
    prefix = runs.timer[: max(size, 2)]
    assert shared.status(prefix)["id"] == runs.timer
    assert shared.ok("status", prefix).startswith("run")
    assert "timer" in shared.why(prefix)


def test_status_filters_by_state_workflow_and_limit(runs: Runs, shared: Wfl) -> None:
    ids = lambda *args: sorted(r["id"] for r in shared.listing(*args))  # noqa: E731
    failed = sorted([runs.failed, runs.unserializable, runs.big_result, runs.big_journal])
    assert ids("--state", "failed") == failed
    assert ids("--workflow", "patient") == [runs.timer]
    assert ids("--workflow", "quick", "--state", "failed") == []
    assert ids("--limit", "1") == [runs.timer]  # newest first
    table = shared.ok("status", "--state", "completed")
    assert runs.done in table
    assert runs.doubled in table
    assert runs.timer not in table


def test_show_prints_the_journal_as_a_timeline(runs: Runs, shared: Wfl) -> None:
    recs = shared.records(runs.done)
    kinds = [r["t"] for r in recs]
    assert kinds[0] == "run"
    assert recs[0]["id"] == runs.done
    assert recs[0]["args"] == {"text": "hello"}
    assert "sched" in kinds
    assert "done" in kinds
    assert "end" in kinds
    assert [r["result"] for r in recs if r["t"] == "done"] == ["HELLO"]
    text = shared.ok("show", runs.done[:6])
    for kind in ("run", "sched", "done", "end"):
        assert re.search(rf"\b{kind}\b", text)
    assert '"HELLO"' in text


def test_status_watch_of_a_finished_run_returns_at_once(runs: Runs, shared: Wfl) -> None:
    r = shared("status", runs.done, "--watch", timeout=20)
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stdout


def test_why_names_the_timer_a_run_waits_for(runs: Runs, shared: Wfl) -> None:
    sentence = shared.why(runs.timer)
    assert "timer" in sentence
    assert "later" in sentence
    assert re.search(r"\(in [1-6]?\d\.\dm\)", sentence), sentence  # due within the hour
    assert "\n" not in sentence
    out = json.loads(shared.ok("status", runs.timer, "--why", "--json"))
    assert out["id"] == runs.timer
    assert "timer" in out["why"]


def test_why_names_the_event_a_run_waits_for(runs: Runs, shared: Wfl) -> None:
    sentence = shared.why(runs.event)
    assert "event" in sentence
    assert "'approved'" in sentence


def test_why_says_how_a_finished_run_ended(runs: Runs, shared: Wfl) -> None:
    assert shared.why(runs.done).startswith("nothing: it completed")
    sentence = shared.why(runs.failed)
    assert sentence.startswith("nothing: it failed")
    assert "boom from the flow" in sentence


def test_send_event_completes_a_run_waiting_for_it(cli: Wfl) -> None:
    run_id = cli.start(flow("event_wait"))
    cli.drive()
    assert [s["name"] for s in cli.peek(run_id)["steps"]] == ["event:approved"]
    out = cli.ok("send-event", run_id, "approved", "--value", '{"ok": true, "by": "ada"}')
    assert run_id in out
    cli.drive()
    st = cli.peek(run_id)
    assert st["state"] == "completed"
    assert st["result"] == {"approved": {"ok": True, "by": "ada"}}


def test_an_event_sent_before_the_run_waits_is_buffered(cli: Wfl) -> None:
    run_id = cli.start(flow("event_wait"))
    cli.ok("send-event", run_id, "approved", "--value", "7")
    cli.drive()
    assert cli.peek(run_id)["result"] == {"approved": 7}


def test_cancel_ends_a_waiting_run_and_on_complete_sees_canceled(cli: Wfl) -> None:
    run_id = cli.start(
        flow("long_timer"), "--on-complete", f"{flow('quick')}:notify", "--context", '{"k": 1}'
    )
    cli.drive()
    assert cli.ok("cancel", run_id[:5]).strip() == f"canceled {run_id}"
    cli.drive()  # the worker records the end and calls on_complete
    st = cli.peek(run_id)
    assert st["state"] == "canceled"
    assert st["steps"][0]["state"] == "done"
    recs = cli.peek_records(run_id)
    assert [r["kind"] for r in recs if r["t"] == "end"] == ["canceled"]
    assert [r["t"] for r in recs].count("oc") == 1
    assert recs[0]["context"] == {"k": 1}


def test_cleanup_deletes_a_finished_run(cli: Wfl) -> None:
    run_id = cli.start(flow("quick"))
    keep = cli.start(flow("long_timer"))
    cli.drive()
    assert cli.ok("cleanup", run_id).strip() == "deleted 1 run"
    assert not (cli.dir / f"{run_id}.journal").exists()
    assert cli.peek_ids() == [keep]


def test_cleanup_finished_respects_older_than(cli: Wfl) -> None:
    a = cli.start(flow("quick"))
    b = cli.start(flow("failing"))
    running = cli.start(flow("long_timer"))
    cli.drive()
    assert cli.ok("cleanup", "--finished", "--older-than", "7d").strip() == "deleted 0 runs"
    assert cli.peek_ids() == sorted([a, b, running])
    assert cli.ok("cleanup", "--finished").strip() == "deleted 2 runs"
    assert cli.peek_ids() == [running]
    assert cli.peek(running)["state"] == "in_progress"


def test_restart_from_a_step_reruns_only_that_step_and_later_ones(cli: Wfl) -> None:
    run_id = cli.start(flow("several_steps"))
    cli.drive()
    assert cli.peek(run_id)["state"] == "completed"
    assert cli.ok("restart", run_id, "--from", "s3").strip() == f"restarted {run_id} from step 3"
    cli.drive()
    recs = cli.peek_records(run_id)
    attempts = [r["n"] for r in recs if r["t"] == "att"]
    assert attempts.count(0) == attempts.count(2) == 1  # kept from the first pass
    assert attempts.count(3) == attempts.count(4) == 2  # ran again
    assert [r["from_step"] for r in recs if r["t"] == "restart"] == [3]
    assert [(r["kind"], r["result"]) for r in recs if r["t"] == "end"] == [("success", 5)] * 2
    # by number; all of it when --from is left out
    assert cli.ok("restart", run_id, "--from", "4").strip() == f"restarted {run_id} from step 4"
    assert "in progress" in refused(cli, "restart", run_id)
    cli.drive()
    assert cli.ok("restart", run_id).strip() == f"restarted {run_id} from step 0"


CHECKED_FLOW = """
from wfl import Step, WorkflowManager

workflow = WorkflowManager()


def first() -> str:
    return "one"


def second() -> str:
    return "two"


def later(value: str) -> str:
    return value


@workflow.define
async def evolving(step: Step) -> str:
    value = await step.run_query(first)
    return await step.run_action(later, {"value": value}, run_after=3600)
"""


def test_check_passes_unchanged_code_and_fails_a_changed_step(cli: Wfl) -> None:
    path = cli.tmp / "evolving.py"
    path.write_text(CHECKED_FLOW)
    run_id = cli.start(str(path))
    cli.drive()  # step 0 recorded; the run now waits an hour for step 1
    r = cli("check", path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ok   {run_id}" in r.stdout
    assert "0 would break" in r.stdout
    before = cli.journals()
    path.write_text(CHECKED_FLOW.replace("run_query(first)", "run_query(second)"))
    r = cli("check", path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr == ""  # a report, not an error (and no stray task tracebacks)
    assert f"FAIL {run_id}" in r.stdout
    assert "'first'" in r.stdout
    assert "'second'" in r.stdout
    assert "step 0" in r.stdout
    assert "1 would break" in r.stdout
    (report,) = json.loads(cli("check", path, "--json").stdout)
    assert (report["run_id"], report["ok"]) == (run_id, False)
    assert cli.journals() == before  # a check executes and writes nothing
    assert "changed since this run started" in cli.ok("status", run_id)


# -- a real, long-lived worker ---------------------------------------------------------------


def poll_status(cli: Wfl, run_id: str, until: Any, timeout: float = 20) -> dict[str, Any]:
    """Poll another process's progress by reading the journal (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        st = cli.peek(run_id)
        if until(st):
            return st
        assert time.monotonic() < deadline, f"timed out waiting; last status: {st}"
        time.sleep(0.05)  # polling a separate process: there is nothing to await


@pytest.fixture
def worker_process(cli: Wfl) -> Any:
    log = (cli.tmp / "worker.log").open("w")
    procs: list[subprocess.Popen[str]] = []

    def spawn() -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("WFL_DIR", "WFL_STORE")}
        proc = subprocess.Popen(
            [WFL, "worker", "--dir", str(cli.dir)],
            cwd=cli.tmp,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    log.close()


@pytest.mark.slow
def test_long_lived_worker_drives_new_runs_and_exits_0_on_sigterm(
    cli: Wfl, worker_process: Any
) -> None:
    proc = worker_process()
    quick = cli.start(flow("int_arg"), "--arg", "n=4")
    st = poll_status(cli, quick, lambda s: s["state"] != "in_progress")
    assert (st["state"], st["result"]) == ("completed", 8)
    assert cli.status(quick)["state"] == "completed"  # and `wfl status` agrees
    waiting = cli.start(flow("event_wait"))
    poll_status(cli, waiting, lambda s: s["steps"])  # it now waits for its event
    cli.ok("send-event", waiting, "approved", "--value", '"yes"')
    st = poll_status(cli, waiting, lambda s: s["state"] != "in_progress")
    assert (st["state"], st["result"]) == ("completed", {"approved": "yes"})
    timer = cli.start(flow("long_timer"))
    poll_status(cli, timer, lambda s: s["steps"] and s["steps"][0]["state"] == "done")
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    log = (cli.tmp / "worker.log").read_text()
    assert "Traceback" not in log
    st = cli.peek(timer)  # the hour-long timer is still there for the next worker
    assert st["state"] == "in_progress"
    assert [s["state"] for s in st["steps"]] == ["done", "scheduled"]


@pytest.mark.slow
def test_idle_worker_exits_0_on_sigterm(cli: Wfl, worker_process: Any) -> None:
    proc = worker_process()
    run_id = cli.start(flow("quick"))
    poll_status(cli, run_id, lambda s: s["state"] == "completed")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert not any((cli.dir / "workers").iterdir())  # it deregistered


# -- bad input: one clear line, the right exit code, nothing lost ----------------------------


def test_missing_flow_file(cli: Wfl) -> None:
    line = refused(cli, "start", "no_such_flow.py")
    assert "no_such_flow.py" in line
    assert "not found" in line
    refused(cli, "run", "no_such_flow.py")
    refused(cli, "check", "no_such_flow.py")
    assert not cli.dir.exists()


def test_syntax_error_in_a_flow_names_the_users_file_and_line(cli: Wfl) -> None:
    bad = cli.tmp / "broken_flow.py"
    bad.write_text(
        "from wfl import Step, WorkflowManager\n\nworkflow = WorkflowManager()\n\n"
        "def broken(:\n    pass\n"
    )
    line = refused(cli, "start", bad)
    assert f"{bad}:5" in line
    assert "SyntaxError" in line
    line = refused(cli, "run", bad)
    assert f"{bad}:5" in line
    assert not cli.dir.exists()


def test_import_error_in_a_flow_names_the_users_file_and_line(cli: Wfl) -> None:
    line = refused(cli, "start", flow("import_error"))
    assert f"{flow('import_error')}:3" in line
    assert "no_such_module_for_wfl_tests" in line
    assert "ModuleNotFoundError" in line
    assert "wfl/loader.py" not in line
    assert "importlib" not in line


def test_unknown_workflow_name(cli: Wfl) -> None:
    line = refused(cli, "start", f"{flow('quick')}:nope")
    assert "'nope'" in line
    assert "quick" in line


def test_two_workflows_and_none_named(cli: Wfl) -> None:
    line = refused(cli, "start", flow("two_workflows"))
    assert "first" in line
    assert "second" in line
    run_id = cli.start(f"{flow('two_workflows')}:second")
    assert cli.peek(run_id)["workflow"] == "second"


def test_bad_arg_value_names_the_argument_and_the_expected_type(cli: Wfl) -> None:
    line = refused(cli, "start", flow("int_arg"), "--arg", "n=abc")
    assert "'n'" in line
    assert "int" in line
    assert "abc" in line
    refused(cli, "run", flow("int_arg"), "--arg", "n=abc")
    assert not cli.dir.exists()


def test_arg_without_equals_sign(cli: Wfl) -> None:
    line = refused(cli, "start", flow("int_arg"), "--arg", "n")
    assert "NAME=VALUE" in line


def test_unknown_argument_name(cli: Wfl) -> None:
    line = refused(cli, "start", flow("int_arg"), "--arg", "m=1")
    assert "'m'" in line
    assert "n" in line


def test_missing_required_argument(cli: Wfl) -> None:
    assert "'n'" in refused(cli, "start", flow("int_arg"))


@pytest.mark.parametrize(
    ("text", "says"), [("{", "not valid JSON"), ("[1, 2]", "JSON object"), ('"n"', "JSON object")]
)
def test_bad_args_json(cli: Wfl, text: str, says: str) -> None:
    assert says in refused(cli, "start", flow("int_arg"), "--args-json", text)


def test_unknown_run_id(shared: Wfl) -> None:
    cli = shared
    unknown = "zz9"  # run ids are hex: no run starts with z
    commands = [
        ["status", unknown, "--why"], ["show", unknown], ["cancel", unknown],
        ["cleanup", unknown], ["send-event", unknown, "go"], ["restart", unknown],
    ]  # fmt: skip
    for command in commands:
        line = refused(cli, *command)
        assert "'zz9'" in line, command
        assert "no run" in line, command


def test_ambiguous_run_id(cli: Wfl) -> None:
    seen: dict[str, str] = {}
    for _ in range(17):  # 16 hex digits: two runs share a first character by the 17th
        run_id = cli.start(flow("long_timer"))
        if run_id[0] in seen:
            break
        seen[run_id[0]] = run_id
    prefix = run_id[0]
    line = refused(cli, "status", prefix)
    assert "ambiguous" in line
    assert run_id in line
    assert seen[prefix] in line
    refused(cli, "cancel", prefix)
    assert cli.peek(run_id)["state"] == "in_progress"


def test_path_tricks_in_a_run_id_are_refused(shared: Wfl) -> None:
    cli = shared
    victim = cli.tmp / "victim.journal"  # what `cleanup ../victim` would delete if unchecked
    victim.write_bytes(b"not yours")
    outside = cli.tmp.parent / "victim.journal"
    tricks = [
        ("cleanup", "../victim"), ("cleanup", str(cli.tmp / "victim")), ("status", "../.."),
        ("show", "a/b"), ("cancel", ".."), ("send-event", "../victim", "go"),
    ]  # fmt: skip
    for command in tricks:
        assert "run id" in refused(cli, *command), command
    assert victim.read_bytes() == b"not yours"
    assert not outside.exists()
    victim.unlink()


def test_cancel_of_a_finished_run_is_refused(runs: Runs, shared: Wfl) -> None:
    assert "completed" in refused(shared, "cancel", runs.done)
    assert "failed" in refused(shared, "cancel", runs.failed)


def test_cleanup_of_a_running_run_is_refused(runs: Runs, shared: Wfl) -> None:
    assert "in progress" in refused(shared, "cleanup", runs.timer)


def test_send_event_to_a_finished_run_is_refused(runs: Runs, shared: Wfl) -> None:
    line = refused(shared, "send-event", runs.done, "approved", "--value", "1")
    assert "completed" in line
    assert "approved" in line


def test_send_event_with_invalid_json_value(runs: Runs, shared: Wfl) -> None:
    line = refused(shared, "send-event", runs.event, "approved", "--value", "{nope")
    assert "--value" in line


def test_restart_refuses_unknown_steps_and_running_runs(runs: Runs, shared: Wfl) -> None:
    assert "no step named 'nope'" in refused(shared, "restart", runs.done, "--from", "nope")
    assert "no step 9" in refused(shared, "restart", runs.done, "--from", "9")
    assert "in progress" in refused(shared, "restart", runs.timer)


def test_cleanup_finished_refuses_a_bad_duration(shared: Wfl) -> None:
    assert "7 parsecs" in refused(shared, "cleanup", "--finished", "--older-than", "7 parsecs")


def test_context_that_is_not_json(cli: Wfl) -> None:
    line = refused(
        cli, "start", flow("quick"), "--on-complete", f"{flow('quick')}:notify", "--context", "{"
    )
    assert "--context" in line
    assert "JSON" in line
    assert not cli.dir.exists()


@pytest.mark.parametrize("target", ["{quick}:missing", "{quick}", "{nowhere}:notify"])
def test_on_complete_that_does_not_exist(cli: Wfl, target: str) -> None:
    target = target.format(quick=flow("quick"), nowhere=cli.tmp / "nowhere.py")
    line = refused(cli, "start", flow("quick"), "--on-complete", target)
    assert "missing" in line or "FUNCTION" in line or "not found" in line
    assert not cli.dir.exists()


def test_usage_errors_are_one_line_too(shared: Wfl) -> None:
    cli = shared
    for args in (["start"], ["status", "--limit", "0"], ["bogus"],
                 ["worker", "--max-parallelism", "x"], ["status", "--state", "weird"]):  # fmt: skip
        refused(cli, *args)


@pytest.mark.parametrize(
    "command", [["start", "{quick}"], ["run", "{quick}"], ["worker", "--once"], ["status"]]
)
def test_journal_directory_that_cannot_be_created(cli: Wfl, command: list[str]) -> None:
    blocker = cli.tmp / "a_regular_file"
    blocker.write_text("")
    args = [part.format(quick=flow("quick")) for part in command]
    r = wfl(*args, "--dir", blocker / "sub", cwd=cli.tmp)
    line = one_error_line(r)
    assert str(blocker / "sub") in line
    assert blocker.read_text() == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0500 directory regardless")
def test_journal_directory_that_is_not_writable(cli: Wfl) -> None:
    cli.dir.mkdir(mode=0o500)
    try:
        line = refused(cli, "start", flow("quick"))
        assert str(cli.dir) in line or "ermission" in line
    finally:
        cli.dir.chmod(0o700)


def test_corrupt_journal_fails_that_run_only(cli: Wfl) -> None:
    healthy = cli.start(flow("quick"))
    broken = cli.start(flow("several_steps"))
    cli.drive()
    path = cli.dir / f"{broken}.journal"
    data = bytearray(path.read_bytes())
    assert len(cli.peek_records(broken)) > 10
    middle = len(data) // 2
    for i in range(middle, middle + 4):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))

    listed = {r["id"]: r for r in cli.listing()}
    assert listed[healthy]["state"] == "completed"
    assert listed[broken]["state"] == "failed"
    error = listed[broken]["error"]
    assert str(path) in error
    assert re.search(r"byte \d+", error), error
    assert broken in cli.ok("status")  # the table still lists it

    st = cli.status(broken)
    assert (st["state"], st["id"]) == ("failed", broken)
    assert "corrupt" in cli.ok("status", broken)
    assert "corrupt" in cli.why(broken)
    r = cli("show", broken)  # shows the good records, then says where the damage is
    assert "run" in r.stdout
    assert "corrupt" in one_error_line(r)

    later = cli.start(flow("int_arg"), "--arg", "n=3")
    r = cli("worker", "--once")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert cli.peek(later)["result"] == 6
    assert path.read_bytes() == bytes(data)  # nothing appended to or cut from the damage

    assert cli.ok("cleanup", broken).strip() == "deleted 1 run"  # the error suggests this
    assert not path.exists()


def test_corrupt_journal_does_not_stop_cleanup_of_finished_runs(cli: Wfl) -> None:
    done = cli.start(flow("quick"))
    broken = cli.start(flow("several_steps"))
    cli.drive()
    path = cli.dir / f"{broken}.journal"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    r = cli("cleanup", "--finished")
    assert r.returncode == 0, r.stderr
    assert not (cli.dir / f"{done}.journal").exists()


def test_step_returning_an_unserializable_value_fails_the_run(runs: Runs) -> None:
    st = runs.cli.peek(runs.unserializable)
    assert st["state"] == "failed"
    assert "make_set" in st["error"]
    assert "set" in st["error"].replace("make_set", "")
    assert st["steps"][0]["state"] == "failed"


def test_result_over_result_limit_fails_the_step(runs: Runs) -> None:
    st = runs.cli.peek(runs.big_result)
    assert st["state"] == "failed"
    assert "blob" in st["error"]
    assert "too large" in st["error"]
    assert "result_limit" in st["error"]
    assert st["steps"][0]["state"] == "failed"


def test_journal_over_journal_limit_fails_the_run_and_says_what_to_do(runs: Runs) -> None:
    cli, run_id = runs.cli, runs.big_journal
    st = cli.peek(run_id)
    assert st["state"] == "failed"
    assert "journal_limit" in st["error"]
    assert "store big data elsewhere" in st["error"]
    assert (cli.dir / f"{run_id}.journal").stat().st_size <= 4096
    assert cli.peek_records(run_id)[-1]["t"] in ("end", "oc")  # readable to its end
    assert not [s for s in st["steps"] if s["state"] in ("running", "scheduled")]


# -- security ---------------------------------------------------------------------------------


def test_directory_is_0700_and_journals_are_0600(cli: Wfl) -> None:
    old_umask = os.umask(0)  # the modes must not depend on a careful umask
    try:
        run_id = cli.start(flow("quick"))
        assert stat.S_IMODE(cli.dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((cli.dir / f"{run_id}.journal").stat().st_mode) == 0o600
        cli.start(flow("long_timer"))
        cli.drive()
    finally:
        os.umask(old_umask)
    for path in cli.dir.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"


# -- help ---------------------------------------------------------------------------------------

COMMANDS = [
    "start", "run", "status", "cancel", "cleanup", "worker", "send-event", "restart", "show",
    "check",
]  # fmt: skip


def test_help_lists_every_command_and_each_command_has_help(tmp_path: Path) -> None:
    r = wfl("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for command in COMMANDS:
        assert command in r.stdout
    for command in COMMANDS:
        r = wfl(command, "--help", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "--dir" in r.stdout
        assert "Usage" in r.stdout
    assert not (tmp_path / ".wfl").exists()
