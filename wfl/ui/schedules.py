"""The schedules list of the web view (SPEC §8 schedules), through the Client's schedule API.

A Client without that API (an older store) simply has no schedules to show: the page hides
its Schedules tab.
"""

from __future__ import annotations

from typing import Any

from wfl.client import Client
from wfl.errors import InvalidArguments

ACTIONS = ("pause", "resume", "trigger")


def available(client: Client) -> bool:
    return callable(getattr(client, "list_schedules", None))


def list_schedules(client: Client) -> dict[str, Any]:
    if not available(client):
        return {"available": False, "schedules": []}
    found = client.list_schedules()
    return {"available": True, "schedules": [_as_dict(s) for s in found]}


def act(client: Client, name: str, action: str) -> Any:
    if action not in ACTIONS or not available(client):
        raise InvalidArguments(f"no schedule action {action!r}")
    return getattr(client, f"{action}_schedule")(name)


def _as_dict(schedule: Any) -> dict[str, Any]:
    if isinstance(schedule, dict):
        return schedule
    to_dict = getattr(schedule, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    return dict(vars(schedule))
