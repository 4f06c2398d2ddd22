"""The loader in-process: module names, private names for taken ones, clashes, roll-back of a
failed import. (End-to-end behaviour with the real command: tests/test_loader_cli.py.)

These tests import into the test process itself, so every package and module name is unique
per test (a process keeps what it imported)."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from wfl.errors import FlowLoadError
from wfl.loader import load_module, load_workflow, locate, module_name


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def unique(tmp_path: Path, stem: str) -> str:
    return f"{stem}_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}"


FLOW = """
from wfl import Step, WorkflowManager

workflow = WorkflowManager()

@workflow.define
async def {name}(step: Step) -> str:
    return "{word}"
"""


def test_a_file_in_a_package_is_named_by_its_package(tmp_path: Path) -> None:
    pkg = unique(tmp_path, "app")
    write(tmp_path / pkg / "__init__.py", "")
    write(tmp_path / pkg / "sub" / "__init__.py", "")
    flow = write(tmp_path / pkg / "sub" / "flows.py", FLOW.format(name="wf", word="x"))
    assert module_name(str(flow)) == f"{pkg}.sub.flows"
    loose = write(tmp_path / "loose" / "flow.py", "")
    assert module_name(str(loose)) == "flow"
    module = load_module(str(flow))
    assert module.__name__ == f"{pkg}.sub.flows"
    assert sys.modules[f"{pkg}.sub"].flows is module  # a real submodule of its package


def test_a_flow_named_like_a_standard_module_does_not_replace_it(tmp_path: Path) -> None:
    import email

    flow = write(tmp_path / "email.py", FLOW.format(name="mail", word="sent"))
    wf = load_workflow(str(flow), "mail")
    assert wf.fn.__module__ != "email"
    assert sys.modules["email"] is email


def test_two_loose_flows_with_one_file_name_each_run_their_own_code(tmp_path: Path) -> None:
    stem = unique(tmp_path, "flow")
    a = write(tmp_path / "a" / f"{stem}.py", FLOW.format(name="wf_a", word="a"))
    b = write(tmp_path / "b" / f"{stem}.py", FLOW.format(name="wf_b", word="b"))
    assert load_workflow(str(a)).name == "wf_a"
    assert load_workflow(str(b)).name == "wf_b"  # under a private name: the first holds stem


def test_a_package_loaded_from_two_places_is_refused_with_the_clash_named(tmp_path: Path) -> None:
    pkg = unique(tmp_path, "shop")
    for release in ("r1", "r2"):
        write(tmp_path / release / pkg / "__init__.py", "")
        write(tmp_path / release / pkg / "flows.py", FLOW.format(name="order", word=release))
    load_module(str(tmp_path / "r1" / pkg / "flows.py"))
    with pytest.raises(FlowLoadError) as caught:
        load_module(str(tmp_path / "r2" / pkg / "flows.py"))
    message = str(caught.value)
    assert str(tmp_path / "r1" / pkg) in message
    assert "--app-dir" in message


def test_a_failed_import_leaves_nothing_half_loaded(tmp_path: Path) -> None:
    helper = unique(tmp_path, "helper")
    write(tmp_path / f"{helper}.py", "VALUE = 1\n")
    flow = write(
        tmp_path / unique(tmp_path, "flaky") / "flow_x.py",
        f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport {helper}\n"
        "raise ValueError('half')\n",
    )
    with pytest.raises(FlowLoadError, match="ValueError: half"):
        load_module(str(flow))
    assert helper not in sys.modules
    write(flow, f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport {helper}\n")
    assert load_module(str(flow)).__name__ == "flow_x"  # fixed: the retry imports afresh


def test_a_module_file_named_time_does_not_beat_the_builtin(tmp_path: Path) -> None:
    import time

    write(tmp_path / "time.py", "raise RuntimeError('shadowed')\n")
    stem = unique(tmp_path, "timed")
    flow = write(tmp_path / f"{stem}.py", "import time\n" + FLOW.format(name="t", word="t"))
    load_module(str(flow))
    assert sys.modules["time"] is time


def test_locate_prefers_the_recorded_path_without_an_app_dir_and_finds_moved_modules(
    tmp_path: Path,
) -> None:
    pkg = unique(tmp_path, "moved")
    write(tmp_path / "old" / pkg / "__init__.py", "")
    flow = write(tmp_path / "old" / pkg / "flows.py", "")
    assert locate(str(flow), f"{pkg}.flows") == str(flow)
    (tmp_path / "old").rename(tmp_path / "new")
    with pytest.raises(FlowLoadError, match="is missing"):
        locate(str(flow), f"{pkg}.flows")
    sys.path.insert(0, str(tmp_path / "new"))  # installed, as far as the import path goes
    try:
        found = locate(str(flow), f"{pkg}.flows")
    finally:
        sys.path.remove(str(tmp_path / "new"))
    assert found == str(tmp_path / "new" / pkg / "flows.py")


def test_an_app_dir_wins_for_a_package_module_but_not_over_a_loose_file_that_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wfl import loader

    app = tmp_path / "app"
    write(app / "myapp" / "__init__.py", "")
    packaged = write(app / "myapp" / "flows.py", "")
    loose_here = write(app / "flow.py", "")
    monkeypatch.setattr(loader, "_app_dirs", [str(app)])
    old_package = write(tmp_path / "old" / "myapp" / "flows.py", "")
    assert locate(str(old_package), "myapp.flows") == str(packaged)  # the release it serves
    other = write(tmp_path / "elsewhere" / "flow.py", "")
    assert locate(str(other), "flow") == str(other)  # a same-named loose file is not it
    other.unlink()
    assert locate(str(other), "flow") == str(loose_here)  # gone: the module is all there is
