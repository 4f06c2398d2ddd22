"""wfl: durable workflows for Python, one append-only msgpack journal per run.

Public names are imported on first use (PEP 562), so `from wfl import Step` in a flow file
does not pull in the client, the worker or asyncio: `wfl start` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_WHERE = {
    "Client": "client",
    "RunStatus": "client",
    "DeadlineExceeded": "errors",
    "DeterminismViolation": "errors",
    "EventFailed": "errors",
    "EventTimeout": "errors",
    "JournalCorrupt": "errors",
    "JournalLimitExceeded": "errors",
    "NonRetryableError": "errors",
    "StepFailed": "errors",
    "WflError": "errors",
    "WorkflowCanceled": "errors",
    "WorkflowFailed": "errors",
    "RetryPolicy": "manager",
    "WorkflowManager": "manager",
    "Step": "step",
    "current_step": "step",
}

__all__ = [
    "Client",
    "DeadlineExceeded",
    "DeterminismViolation",
    "EventFailed",
    "EventTimeout",
    "JournalCorrupt",
    "JournalLimitExceeded",
    "NonRetryableError",
    "RetryPolicy",
    "RunStatus",
    "Step",
    "StepFailed",
    "WflError",
    "WorkflowCanceled",
    "WorkflowFailed",
    "WorkflowManager",
    "current_step",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'wfl' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .client import Client, RunStatus
    from .errors import (
        DeadlineExceeded,
        DeterminismViolation,
        EventFailed,
        EventTimeout,
        JournalCorrupt,
        JournalLimitExceeded,
        NonRetryableError,
        StepFailed,
        WflError,
        WorkflowCanceled,
        WorkflowFailed,
    )
    from .manager import RetryPolicy, WorkflowManager
    from .step import Step, current_step
