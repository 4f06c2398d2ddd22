"""Import a user's flow file and find its workflows, turning every failure into one clear line."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, TypeGuard

from . import importer
from .errors import FlowLoadError
from .manager import WorkflowDef

_modules: dict[str, ModuleType] = {}  # flow path as given (absolute) -> its module
_app_dirs: list[str] = []  # where this process looks for a run's module first (SPEC §7)


def split_target(target: str) -> tuple[str, str | None]:
    """ "flow.py:name" -> ("flow.py", "name"); "flow.py" -> ("flow.py", None)."""
    path, sep, name = target.rpartition(":")
    if sep and path and not name.startswith(("/", "\\")):
        return path, name or None
    return target, None


_SHAS: dict[str, tuple[tuple[int, int, int, int], str]] = {}  # path -> (its stat, its sha)


def file_sha(path: str) -> str:
    """The sha256 of a flow file (every start records it). A file this process hashed is
    not read again while its inode, size and times are the same, unless it changed within
    the last 2 s (a write in the same clock tick as the last hash would keep its mtime)."""
    try:
        st = os.stat(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = _SHAS.get(path)
        if known is not None and known[0] == key:
            return known[1]
        sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""
    if time.time() - st.st_ctime > 2.0:
        if len(_SHAS) >= 1000:
            _SHAS.clear()  # (a bound, not a cache policy)
        _SHAS[path] = (key, sha)
    return sha


_MODULES: dict[str, tuple[float, str]] = {}  # path -> (when found, its module name)
MODULE_TTL = 1.0  # seconds a flow path's module name is reused (module_name)


def module_name(path: str) -> str:
    """The module a flow file imports as (SPEC §1), recorded with each run (SPEC §7).

    Found again at most once a second per path: resolving the path's symlinks and looking
    for packages above it is ~10 syscalls, ~70 us of each start on cold caches (issue 16).
    A start within a second of adding or removing an `__init__.py` above the file (or of
    re-pointing a symlink to it) may so record the module name it had before."""
    now = time.monotonic()
    known = _MODULES.get(path)
    if known is not None and now - known[0] < MODULE_TTL:
        return known[1]
    name = importer.import_location(os.path.realpath(os.path.abspath(path)))[1]
    if len(_MODULES) >= 1000:
        _MODULES.clear()  # (a bound, not a cache policy)
    _MODULES[path] = (now, name)
    return name


def add_app_dir(path: str) -> None:
    """Look for runs' modules in `path` before their recorded files (`wfl worker --app-dir`;
    a CLI worker's working directory by default)."""
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise FlowLoadError(f"app directory not found: {path}")
    importer.add_root(real)
    if real not in _app_dirs:
        _app_dirs.insert(0, real)


def locate(flow: str, module: str) -> str:
    """The file to load a run's workflow from: its module in an app directory, else the
    recorded file, else its module wherever this process's import path finds it.

    A loose file's module name (`flow` for some folder's flow.py) says little about which
    code it is, so for those the recorded file wins while it exists."""
    packaged = "." in module
    if packaged and (found := _in_app_dirs(module)) is not None:
        return found
    if os.path.exists(flow):
        return flow
    if module:
        origin = _in_app_dirs(module) if not packaged else None
        origin = origin or _find_module(module)
        if origin is not None:
            return origin
    where = f"module {module} is not importable here and " if module else ""
    dirs = ", ".join(_app_dirs) or "none"
    raise FlowLoadError(
        f"{where}its flow file {flow} is missing (app directories: {dirs}): restore the file, "
        "or run the worker where the module imports (wfl worker --app-dir DIR)"
    )


def _in_app_dirs(module: str) -> str | None:
    for folder in _app_dirs:
        found = importer.module_file(folder, module)
        if found is not None:
            return found
    return None


def _find_module(module: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module)
    except Exception:  # its package does not import here: same as not found
        return None
    origin = spec.origin if spec is not None else None
    return origin if origin and os.path.isfile(origin) else None


def load_run_workflow(flow: str, module: str, name: str) -> WorkflowDef:
    """A run's workflow, found as SPEC §7 says (see `locate`)."""
    return load_workflow(locate(flow, module), name)


def load_module(path: str) -> ModuleType:
    """Import the flow file at `path` as user code (SPEC §1). A module, once imported, is kept
    for the life of the process even when its file changes: a worker never mixes old and new
    code (it says that newer code waits; `wfl worker --reload` restarts it instead)."""
    given = os.path.abspath(path)
    cached = _modules.get(given)
    if cached is not None:
        return cached
    try:
        os.stat(given)
    except FileNotFoundError:
        raise FlowLoadError(f"flow file not found: {path}") from None
    except OSError as exc:
        raise FlowLoadError(f"cannot read flow file {path}: {exc.strerror}") from None
    if not os.path.isfile(given):
        raise FlowLoadError(f"flow file is not a file: {path}")
    # The real path decides where the flow imports from (a symlinked flow sees the modules
    # beside its real file, as `python link.py` does); the given path stays its identity.
    real = os.path.realpath(given)
    module = _already_imported(real)
    if module is None:
        module = _import(path, real)
    _modules[given] = module
    return module


def _import(path: str, real: str) -> ModuleType:
    root, name = importer.import_location(real)
    taken = sys.modules.get(name)
    private = False
    if "." in name:
        top = name.split(".")[0]
        package = sys.modules.get(top)
        if package is not None and not _is_file(package, os.path.join(root, top, "__init__.py")):
            _refuse_other_copy(path, name, package)
        if taken is not None:
            _refuse_other_copy(path, name, taken)
    elif taken is not None or name in sys.stdlib_module_names:
        # a loose file whose name is taken (another folder's flow.py, or a standard module):
        # give it a private name rather than replace what is there
        private = True
        name = "wfl_flow_" + hashlib.sha1(real.encode()).hexdigest()[:12]
    _refuse_beside_changed_code(path, root)
    importer.add_root(root)
    before = set(sys.modules)
    files = set(importer.loaded_files())
    hidden = importer.shadowed_by(root)
    for other in hidden:
        del sys.modules[other]
    try:
        module = importer.load_file(name, real) if private else importlib.import_module(name)
        clash = [n for n in hidden if n in sys.modules]
        if clash:
            raise FlowLoadError(_clash_message(path, clash[0], hidden[clash[0]], root))
        if os.path.realpath(getattr(module, "__file__", "") or "") != real:
            raise FlowLoadError(
                f"{path} should import as {name}, but that name finds "
                f"{getattr(module, '__file__', '?')}: rename the file or its package, or run "
                "it from a separate process"
            )
    except SyntaxError as exc:
        _forget(before, hidden, files)
        raise FlowLoadError(
            f"{exc.filename or path}:{exc.lineno}: SyntaxError: {exc.msg}"
        ) from None
    except FlowLoadError:
        _forget(before, hidden, files)
        raise
    except BaseException as exc:
        _forget(before, hidden, files)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise FlowLoadError(f"{_user_frame(exc, real)}: {_describe(exc)}") from None
    sys.modules.update(hidden)
    return module


def _refuse_beside_changed_code(path: str, root: str) -> None:
    """A flow loaded now would run its new code with the old copy of a neighbour this process
    loaded before the neighbour changed: a mix. Refuse until the process restarts. (Other
    flows changing does not matter: flows do not import each other.)"""
    flows = {getattr(m, "__file__", None) for m in _modules.values()}
    for changed in importer.changed_files():
        if changed.startswith(root + os.sep) and changed not in flows:
            raise FlowLoadError(
                f"newer code waits: {changed} changed since this process loaded it, and {path} "
                "would run with the old copy; restart the worker (or run wfl worker --reload)"
            )


def _forget(before: set[str], hidden: dict[str, ModuleType], files: set[str]) -> None:
    """Undo a failed import: drop every module it added (a later retry, after the user fixed
    the file, must import them afresh, not half from this attempt) and put back what was hidden."""
    for name in set(sys.modules) - before:
        del sys.modules[name]
    sys.modules.update(hidden)
    importer.forget_files(files)


def _is_file(module: ModuleType, path: str) -> bool:
    file = getattr(module, "__file__", None)
    return bool(file) and os.path.realpath(str(file)) == os.path.realpath(path)


def _refuse_other_copy(path: str, name: str, loaded: ModuleType | None) -> None:
    """`name` (or its top package) is already loaded in this process from another place."""
    if loaded is None:
        return
    where = getattr(loaded, "__file__", None) or "elsewhere"
    raise FlowLoadError(
        f"{path} imports as {name}, but this process already loaded "
        f"{loaded.__name__} from {where}: one process holds one copy of a package; run a "
        "worker per copy (wfl worker --app-dir DIR)"
    )


def _clash_message(path: str, name: str, first: ModuleType, root: str) -> str:
    theirs = getattr(first, "__file__", "?")
    mine = importer.module_file(root, name)
    return (
        f"{path} imports {name!r} ({mine}), but this worker already loaded {name!r} from "
        f"{theirs} for another flow: one process holds one module per name. Make each folder "
        f"a package (add __init__.py, import it as yourpkg.{name}) or rename one of them"
    )


def _already_imported(real: str) -> ModuleType | None:
    base = os.path.basename(real)
    for name, module in list(sys.modules.items()):
        if name.startswith("wfl_flow_"):
            continue
        file = getattr(module, "__file__", None)
        # realpath costs system calls: only for the few modules with the same file name
        if file and os.path.basename(file) == base and os.path.realpath(file) == real:
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
        if _defined_in(value, module):
            found[value.name] = value
    return found


def _defined_in(value: object, module: ModuleType) -> TypeGuard[WorkflowDef]:
    return isinstance(value, WorkflowDef) and value.fn.__module__ == module.__name__


def load_workflow(path: str, name: str | None = None) -> WorkflowDef:
    """The workflow `name` defined in the flow file `path` (the only one if name is None)."""
    module = load_module(path)
    if name is not None:  # (usually the attribute of its name: no look at the whole module)
        value = vars(module).get(name)
        if _defined_in(value, module) and value.name == name:
            return value
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


def load_function(path: str, name: str, module_name: str = "") -> Any:
    """A module-level function of a flow file (for on_complete), found as a run's workflow is
    (`locate`)."""
    module = load_module(locate(path, module_name))
    fn = getattr(module, name, None)
    if not callable(fn):
        raise FlowLoadError(f"{path} has no function {name!r}")
    return fn


def function_ref(fn: Any) -> list[str]:
    """[absolute source file, name, module] of a module-level function, for the journal
    (journals before 0.2 hold only file and name)."""
    import inspect

    if isinstance(fn, str):
        path, name = split_target(fn)
        if name is None:
            raise FlowLoadError(f"name the function: {fn}:FUNCTION")
        return [os.path.abspath(path), name, module_name(path)]
    source = inspect.getsourcefile(fn)
    if source is None:
        raise FlowLoadError(f"cannot tell which file defines {fn!r}")
    return [os.path.abspath(source), fn.__name__, module_name(source)]
