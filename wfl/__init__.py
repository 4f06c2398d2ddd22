"""wfl: durable workflows for Python, one append-only msgpack journal per run."""

from .client import Client, RunStatus
from .errors import (
    DeterminismViolation,
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

__all__ = [
    "Client",
    "DeterminismViolation",
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
