"""Choosing a store: `--store STORE` / `Client(store=...)`, then $WFL_STORE, then $WFL_DIR,
then ./.wfl. `PATH` or `file:PATH` is a journal directory; `postgresql://...` is PostgreSQL
(psycopg is imported only then, so `wfl start` on a directory stays fast)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

from wfl.errors import InvalidArguments

if TYPE_CHECKING:
    from .base import Store

PG_SCHEMES = ("postgresql://", "postgres://")


def open_store(store: Any = None, *, dir: Any = None) -> Store:
    """The store named by `store` (a spec string, a path, or a Store), else by `dir`, else
    by the environment. Giving both is bad input."""
    if store is not None and dir is not None:
        raise InvalidArguments("give --store or --dir, not both (--dir PATH means --store PATH)")
    spec = store if store is not None else dir
    if spec is None:
        spec = os.environ.get("WFL_STORE") or os.environ.get("WFL_DIR") or ".wfl"
    if not isinstance(spec, str | os.PathLike):
        return spec  # type: ignore[no-any-return]  # a Store already
    text = os.fspath(spec)
    if text.startswith(PG_SCHEMES):
        try:
            import psycopg  # noqa: F401  (only a PostgreSQL store pays for this import)
        except ImportError:
            raise InvalidArguments(
                f"store {mask(text)} needs psycopg: pip install 'wfl[postgres]'"
            ) from None
        from .postgres import PostgresStore

        return PostgresStore(text)
    scheme = _SCHEME.match(text)
    if scheme and scheme.group(1).lower() != "file":
        raise InvalidArguments(
            f"unknown store {mask(text)!r}: use a directory, file:PATH or postgresql://..."
        )
    if text.startswith("file:"):
        text = text[len("file:") :]
        if text.startswith("//"):
            text = text[2:]  # file:///abs/path
        if not text:
            raise InvalidArguments("file: needs a path, e.g. file:./.wfl")
    from wfl.store import FileStore

    return FileStore(text)


_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.I)
_USERINFO = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@?#\s]*:)(?P<pw>[^@/\s]*)@", re.I)
_PARAM = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]*)", re.I)


def mask(text: str) -> str:
    """`text` with every URL password replaced by `***`."""
    text = _USERINFO.sub(lambda m: m.group("head") + "***@", text)
    return _PARAM.sub(lambda m: m.group("head") + "***", text)
