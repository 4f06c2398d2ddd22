"""JSON text of journal values for the terminal. msgpack holds what JSON cannot: bytes (shown
as their repr) and dict keys that are bytes or other non-JSON types (shown as their repr).

Indented output (`--json`) is what json.dumps(indent=...) writes, but built here: with an
indent, json uses its pure-Python encoder, ~0.4 s of `wfl status --json` over 10,000 runs.
The values wfl prints are plain dicts, lists, strings and numbers, so a direct walk writes the
same text several times faster; anything else (a subclass of those, a key that is not a
string) goes to json itself.
"""

from __future__ import annotations

from typing import Any

try:  # the C function json.encoder uses; json's package import costs `wfl status` ~4 ms
    from _json import encode_basestring_ascii
except ImportError:  # pragma: no cover  (an interpreter without the C accelerator)
    from json.encoder import encode_basestring_ascii

_INF = float("inf")


def dumps(value: Any, *, indent: int | None = None) -> str:
    if indent is not None:
        out: list[str] = []
        try:
            _walk(value, out, "\n", " " * indent, {})
            return "".join(out)
        except (_NotPlain, RecursionError):
            pass  # json says the same, or raises what it raises
    import json

    try:
        return json.dumps(value, indent=indent, default=repr)
    except TypeError:  # a key JSON cannot hold: rare, so only then walk the value
        return json.dumps(_json_keys(value), indent=indent, default=repr)


class _NotPlain(Exception):
    """A value the direct walk leaves to json."""


def _float(o: float) -> str:
    if o != o:
        return "NaN"
    if o == _INF:
        return "Infinity"
    if o == -_INF:
        return "-Infinity"
    return float.__repr__(o)


def _scalar(o: Any) -> str | None:
    """JSON of a str, None, bool, int or float (exact types), else None."""
    t = type(o)
    if t is str:
        return encode_basestring_ascii(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if t is int:
        return int.__repr__(o)
    if t is float:
        return _float(o)
    return None


def _walk(o: Any, out: list[str], nl: str, step: str, keys: dict[str, str]) -> None:
    """Append the JSON of `o` at the indentation `nl` (a newline and the current indent);
    `keys` caches encoded dict keys (the same few keys recur in every run)."""
    t = type(o)
    if t is dict:
        if not o:
            out.append("{}")
            return
        inner = nl + step
        sep = "{" + inner
        for k, v in o.items():
            key = keys.get(k) if type(k) is str else None
            if key is None:
                if type(k) is not str:
                    raise _NotPlain
                key = keys[k] = encode_basestring_ascii(k) + ": "
            text = _scalar(v)
            if text is None:
                out.append(sep + key)
                _walk(v, out, inner, step, keys)
            else:
                out.append(sep + key + text)
            sep = "," + inner
        out.append(nl + "}")
    elif t is list or t is tuple:
        if not o:
            out.append("[]")
            return
        inner = nl + step
        sep = "[" + inner
        for v in o:
            text = _scalar(v)
            if text is None:
                out.append(sep)
                _walk(v, out, inner, step, keys)
            else:
                out.append(sep + text)
            sep = "," + inner
        out.append(nl + "]")
    else:
        text = _scalar(o)
        if text is None:
            if isinstance(o, str | int | float | list | tuple | dict):
                raise _NotPlain  # a subclass: json's own rules
            text = encode_basestring_ascii(repr(o))  # default=repr, as json applies it
        out.append(text)


def _json_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            (k if k is None or isinstance(k, str | int | float | bool) else repr(k)): _json_keys(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_json_keys(v) for v in value]
    return value
