"""Validate and coerce values against type annotations (pydantic, imported only when needed)."""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

from .errors import InvalidArguments

_PLAIN = (str, int, float, bool, bytes, type(None))


def coerce(value: Any, annotation: Any, *, what: str) -> Any:
    """`value` as `annotation` says (e.g. "5" -> 5 for int), or InvalidArguments naming `what`."""
    if annotation is inspect.Parameter.empty or annotation is Any or annotation is object:
        return value
    if type(value) is annotation and annotation in _PLAIN:
        return value  # already exact: skip importing pydantic (keeps `wfl start` fast)
    from pydantic import ValidationError

    try:
        return _adapter(annotation).validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        expected = getattr(annotation, "__name__", None) or repr(annotation)
        raise InvalidArguments(
            f"{what} must be {expected}: got {value!r} ({first['msg'].lower()})"
        ) from None


@lru_cache(maxsize=256)
def _adapter(annotation: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(annotation)
