"""Shared fixtures: every test starts with fresh counters in tests/flows.py."""

from __future__ import annotations

from collections.abc import Iterator

import flows
import pattern_flows
import pytest


@pytest.fixture(autouse=True)
def _reset_flows() -> Iterator[None]:
    flows.reset()
    pattern_flows.reset()
    yield
    flows.reset()
    pattern_flows.reset()
