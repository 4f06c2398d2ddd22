"""Run ids: random, short, and safe to put in a path (SPEC §5: no id escapes the directory)."""

from __future__ import annotations

import os
import re

from .errors import InvalidRunId

RUN_ID = re.compile(r"^[0-9a-z]{1,64}$")
ID_LENGTH = 12


def new_run_id() -> str:
    return os.urandom(ID_LENGTH // 2).hex()  # (the secrets module costs `wfl start` 8 ms)


def is_run_id(name: str) -> bool:
    return bool(RUN_ID.match(name))


def check_id(run_id: str) -> str:
    """A run id (or prefix) that is safe to put in a path, else InvalidRunId."""
    if not isinstance(run_id, str) or not RUN_ID.match(run_id):
        raise InvalidRunId(str(run_id))
    return run_id
