"""JSON text of journal values for the terminal. msgpack holds what JSON cannot: bytes (shown
as their repr) and dict keys that are bytes or other non-JSON types (shown as their repr)."""

from __future__ import annotations

import json
from typing import Any


def dumps(value: Any, *, indent: int | None = None) -> str:
    try:
        return json.dumps(value, indent=indent, default=repr)
    except TypeError:  # a key JSON cannot hold: rare, so only then walk the value
        return json.dumps(_json_keys(value), indent=indent, default=repr)


def _json_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            (k if k is None or isinstance(k, str | int | float | bool) else repr(k)): _json_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_json_keys(v) for v in value]
    return value
