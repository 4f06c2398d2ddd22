"""How user code is imported: the module name a file imports as, the folders put on sys.path,
bytecode checked against the source actually read, and one module per name per process.

A flow file imports like user code does (SPEC §1): `myapp/flows.py` beside
`myapp/__init__.py` is the module `myapp.flows`, with the folder above `myapp` (its *import
root*) on sys.path; a loose file `greeting.py` is the module `greeting`, its own folder the
root. Every module found under an import root is loaded by `_CheckedLoader`, which compiles
from the source it just read, or reuses a `__pycache__` entry only if that entry was made from
these very bytes (a hash-checked .pyc, PEP 552). Python's default check (mtime in whole seconds
plus size) hands back stale bytecode for a file edited twice within a second to the same size.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import marshal
import os
import sys
from collections.abc import Sequence
from types import CodeType, ModuleType

_HASHED_CHECKED = 0b11  # .pyc flags: hash-based, and the hash must be checked (PEP 552)

_roots: list[str] = []  # import roots, real paths, in the order they were added
_sources: dict[str, tuple[int, int, bytes]] = {}  # file -> (mtime_ns, size, hash) when loaded
_origins: dict[str, str] = {}  # top-level module name loaded under a root -> that root


def import_location(real: str) -> tuple[str, str]:
    """(import root, module name) for the Python file at the real path `real`: climb while the
    folder is a package (has __init__.py and a name Python can import)."""
    folder, base = os.path.split(real)
    stem = base[:-3] if base.endswith(".py") else base
    parts = [] if stem == "__init__" else [stem]
    while os.path.isfile(os.path.join(folder, "__init__.py")):
        name = os.path.basename(folder)
        if not name.isidentifier():
            break
        parts.insert(0, name)
        folder = os.path.dirname(folder)
    if not parts:  # a package's own __init__.py at a root: it cannot be imported by name
        parts = [os.path.basename(os.path.dirname(real))]
    return folder, ".".join(parts)


def module_file(root: str, module: str) -> str | None:
    """The file under `root` that `module` names, if there is one (nothing is imported)."""
    base = os.path.join(root, *module.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def add_root(root: str) -> None:
    """Put an import root first on sys.path (once) and load the modules under it checked."""
    if root not in _roots:
        _roots.append(root)
    if root not in sys.path:
        sys.path.insert(0, root)
    if _CheckedFinder not in sys.meta_path:
        sys.meta_path.insert(0, _CheckedFinder)
        importlib.invalidate_caches()


def is_root(root: str) -> bool:
    return root in _roots


def shadowed_by(root: str) -> dict[str, ModuleType]:
    """Top-level modules loaded from another import root that `root` has a file of the same
    name for: while a flow under `root` imports, `import helpers` must not find the other
    folder's helpers in sys.modules."""
    found: dict[str, ModuleType] = {}
    for name, other in list(_origins.items()):
        module = sys.modules.get(name)
        if other != root and module is not None and module_file(root, name) is not None:
            found[name] = module
    return found


def origin_root(name: str) -> str | None:
    return _origins.get(name)


def changed_files() -> list[str]:
    """Files loaded under an import root whose content changed (or vanished) since."""
    changed = []
    for path, (mtime, size, digest) in list(_sources.items()):
        try:
            st = os.stat(path)
        except OSError:
            changed.append(path)
            continue
        if (st.st_mtime_ns, st.st_size) == (mtime, size):
            continue
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            changed.append(path)
            continue
        if importlib.util.source_hash(data) != digest:
            changed.append(path)
    return sorted(changed)


def loaded_files() -> list[str]:
    return sorted(_sources)


def forget_files(keep: set[str]) -> None:
    """After a failed import: files read since are not loaded code (they may be fixed)."""
    for path in set(_sources) - keep:
        del _sources[path]


def load_file(name: str, real: str) -> ModuleType:
    """Import the file `real` as module `name` (not found through sys.path: a flow whose
    natural name is taken gets a private one)."""
    loader = _CheckedLoader(name, real)
    spec = importlib.util.spec_from_file_location(name, real, loader=loader)
    if spec is None:
        raise ImportError(f"cannot import {real}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


class _CheckedLoader(importlib.machinery.SourceFileLoader):
    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        st = os.stat(path)
        source = self.get_data(path)
        digest = importlib.util.source_hash(source)
        _sources[path] = (st.st_mtime_ns, st.st_size, digest)
        cache = _cache_path(path)
        if cache is not None:
            try:
                data = self.get_data(cache)
            except OSError:
                data = b""
            header = importlib.util.MAGIC_NUMBER + _HASHED_CHECKED.to_bytes(4, "little") + digest
            if data[:16] == header:
                try:
                    code = marshal.loads(data[16:])
                except (EOFError, ValueError, TypeError):
                    code = None
                if isinstance(code, CodeType):
                    return code
        code = self.source_to_code(source, path)
        if cache is not None and not sys.dont_write_bytecode:
            try:
                self.set_data(cache, header + marshal.dumps(code))
            except (OSError, NotImplementedError):
                pass  # a read-only tree: compile again next time
        return code


def _cache_path(path: str) -> str | None:
    try:
        return importlib.util.cache_from_source(path)
    except NotImplementedError:
        return None


class _CheckedFinder:
    """First on sys.meta_path: a module found under an import root gets `_CheckedLoader`;
    anything else is left to the finders after it."""

    @classmethod
    def find_spec(
        cls, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not _roots or name in sys.builtin_module_names:
            return None  # (first on sys.meta_path: a user's time.py must not beat the builtin)
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.origin is None:
            return None
        if type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return None
        root = _root_of(spec.origin, name)
        if root not in _roots:
            return None
        spec.loader = _CheckedLoader(name, spec.origin)
        if "." not in name:
            _origins[name] = root
        return spec

    @classmethod
    def invalidate_caches(cls) -> None:
        pass


def _root_of(origin: str, name: str) -> str:
    levels = name.count(".") + (1 if os.path.basename(origin) == "__init__.py" else 0)
    folder = os.path.dirname(origin)
    for _ in range(levels):
        folder = os.path.dirname(folder)
    return folder
