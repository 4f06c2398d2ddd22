"""Import a user's flow file and find its workflows, turning every failure into one clear line."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import FlowLoadError
from .manager import WorkflowDef

_modules: dict[str, tuple[tuple[int, int], ModuleType]] = {}


def split_target(target: str) -> tuple[str, str | None]:
    """ "flow.py:name" -> ("flow.py", "name"); "flow.py" -> ("flow.py", None)."""
    path, sep, name = target.rpartition(":")
    if sep and path and not name.startswith(("/", "\\")):
        return path, name or None
    return target, None


def file_sha(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def load_module(path: str) -> ModuleType:
    """Import the file at `path` (cached until the file changes)."""
    abspath = os.path.abspath(path)
    try:
        st = os.stat(abspath)
    except FileNotFoundError:
        raise FlowLoadError(f"flow file not found: {path}") from None
    except OSError as exc:
        raise FlowLoadError(f"cannot read flow file {path}: {exc.strerror}") from None
    if not os.path.isfile(abspath):
        raise FlowLoadError(f"flow file is not a file: {path}")
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _modules.get(abspath)
    if cached and cached[0] == stamp:
        return cached[1]
    imported = _already_imported(abspath)
    if imported is not None:  # e.g. the caller's own module: share its state, don't re-run it
        _modules[abspath] = (stamp, imported)
        return imported
    module_name = "wfl_flow_" + hashlib.sha1(abspath.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, abspath)
    if spec is None or spec.loader is None:
        raise FlowLoadError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(abspath)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # so the flow can import its neighbours
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(module_name, None)
        where = f"{exc.filename or path}:{exc.lineno}"
        raise FlowLoadError(f"{where}: SyntaxError: {exc.msg}") from None
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise FlowLoadError(f"{_user_frame(exc, abspath)}: {_describe(exc)}") from None
    _modules[abspath] = (stamp, module)
    return module


def _already_imported(abspath: str) -> ModuleType | None:
    for name, module in list(sys.modules.items()):
        if name.startswith("wfl_flow_"):
            continue
        file = getattr(module, "__file__", None)
        if file and os.path.abspath(file) == abspath:
            return module
    return None


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _user_frame(exc: BaseException, abspath: str) -> str:
    """file:line of the innermost frame in the user's own file (not wfl's importer)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if os.path.abspath(f.filename) == abspath]
    chosen = mine[-1] if mine else (frames[-1] if frames else None)
    return f"{chosen.filename}:{chosen.lineno}" if chosen else abspath


def workflows_in(module: ModuleType) -> dict[str, WorkflowDef]:
    found: dict[str, WorkflowDef] = {}
    for value in vars(module).values():
        if isinstance(value, WorkflowDef) and value.fn.__module__ == module.__name__:
            found[value.name] = value
    return found


def load_workflow(path: str, name: str | None = None) -> WorkflowDef:
    """The workflow `name` defined in the flow file `path` (the only one if name is None)."""
    module = load_module(path)
    found = workflows_in(module)
    if name is not None:
        if name not in found:
            known = ", ".join(sorted(found)) or "none"
            raise FlowLoadError(f"{path} defines no workflow {name!r} (it defines: {known})")
        return found[name]
    if not found:
        raise FlowLoadError(f"{path} defines no workflow (decorate one with @workflow.define)")
    if len(found) > 1:
        names = ", ".join(sorted(found))
        raise FlowLoadError(
            f"{path} defines several workflows ({names}): name one, e.g. {path}:{min(found)}"
        )
    return next(iter(found.values()))


def load_function(path: str, name: str) -> Any:
    """A module-level function of a flow file (for on_complete)."""
    module = load_module(path)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise FlowLoadError(f"{path} has no function {name!r}")
    return fn


def function_ref(fn: Any) -> list[str]:
    """[absolute source file, name] of a module-level function, for the journal."""
    import inspect

    if isinstance(fn, str):
        path, name = split_target(fn)
        if name is None:
            raise FlowLoadError(f"name the function: {fn}:FUNCTION")
        return [os.path.abspath(path), name]
    source = inspect.getsourcefile(fn)
    if source is None:
        raise FlowLoadError(f"cannot tell which file defines {fn!r}")
    return [os.path.abspath(source), fn.__name__]
