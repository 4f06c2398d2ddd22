"""WorkflowManager, `@workflow.define`, RetryPolicy: how users declare workflows."""

from __future__ import annotations

import inspect
import math
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .errors import InvalidArguments

MiB = 1024 * 1024
KiB = 1024


@dataclass(frozen=True)
class RetryPolicy:
    """Convex's defaults: 5 attempts in total, 0.5 s first backoff, doubling."""

    max_attempts: int = 5
    initial_backoff: float = 0.5
    base: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.base < 1:
            raise ValueError("RetryPolicy needs initial_backoff >= 0 and base >= 1")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        jitter = 0.5 + (rng or random).random()  # [0.5, 1.5)
        return float(self.initial_backoff * self.base ** (attempt - 1) * jitter)

    def to_record(self) -> dict[str, float]:
        return {
            "max_attempts": self.max_attempts,
            "initial_backoff": self.initial_backoff,
            "base": self.base,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> RetryPolicy:
        return cls(int(data["max_attempts"]), float(data["initial_backoff"]), float(data["base"]))


NO_RETRY = RetryPolicy(max_attempts=1)


def check_deadline(value: float | timedelta | None) -> float | None:
    """A deadline as positive seconds (None: none); InvalidArguments otherwise."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArguments(f"a deadline is seconds or a timedelta, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise InvalidArguments(f"a deadline must be a positive duration, got {value!r}")
    return float(value)


class WorkflowManager:
    """Groups workflows that share defaults: retry policy, parallelism, size limits."""

    def __init__(
        self,
        *,
        default_retry: RetryPolicy | None = None,
        retry_actions_by_default: bool = False,
        max_parallelism: int = 25,
        journal_limit: int = 8 * MiB,
        result_limit: int = 800 * KiB,
    ) -> None:
        if max_parallelism < 1:
            raise ValueError("max_parallelism must be at least 1")
        self.default_retry = default_retry or RetryPolicy()
        self.retry_actions_by_default = retry_actions_by_default
        self.max_parallelism = max_parallelism
        self.journal_limit = journal_limit
        self.result_limit = result_limit
        self.workflows: dict[str, WorkflowDef] = {}

    def define(
        self,
        fn: Callable[..., Awaitable[Any]] | None = None,
        *,
        returns: Any = None,
        retry: RetryPolicy | bool | None = None,
        max_parallelism: int | None = None,
        version: int = 0,
        name: str | None = None,
        deadline: float | timedelta | None = None,
    ) -> Any:
        """Register an async workflow function; usable bare or with options. `deadline`:
        seconds (or a timedelta) each run of it may take before it fails."""
        limit = check_deadline(deadline)

        def register(func: Callable[..., Awaitable[Any]]) -> WorkflowDef:
            if not inspect.iscoroutinefunction(func):
                raise TypeError(f"workflow {func.__qualname__} must be an `async def` function")
            wf = WorkflowDef(
                func,
                manager=self,
                returns=returns,
                retry=retry,
                max_parallelism=max_parallelism or self.max_parallelism,
                version=version,
                name=name or func.__name__,
                deadline=limit,
            )
            self.workflows[wf.name] = wf
            return wf

        return register(fn) if fn is not None else register


class WorkflowDef:
    """A registered workflow: the function plus its options. Calling it is not allowed;
    start it with `Client.start` / `wfl start`, or from a workflow with `step.run_workflow`."""

    def __init__(
        self,
        fn: Callable[..., Awaitable[Any]],
        *,
        manager: WorkflowManager,
        returns: Any,
        retry: RetryPolicy | bool | None,
        max_parallelism: int,
        version: int,
        name: str,
        deadline: float | None = None,
    ) -> None:
        self.fn = fn
        self.deadline = deadline
        self.manager = manager
        self.returns = returns
        self.retry = retry
        self.max_parallelism = max_parallelism
        self.version = version
        self.name = name
        self.__name__ = name
        self.__qualname__ = fn.__qualname__
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        try:  # resolve string annotations (`from __future__ import annotations`)
            signature = inspect.signature(fn, eval_str=True)
        except Exception:
            signature = inspect.signature(fn)
        params = list(signature.parameters.values())
        if not params:
            raise TypeError(f"workflow {name} must take `step` as its first parameter")
        self.params = params[1:]

    @property
    def source_file(self) -> str:
        path = inspect.getsourcefile(self.fn)
        if path is None:
            raise TypeError(f"cannot tell which file defines workflow {self.name}")
        return os.path.abspath(path)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"workflow {self.name} is not called directly: start it with Client.start(), "
            "`wfl start`, or step.run_workflow()"
        )

    def retry_policy_for(self, kind: str, retry: RetryPolicy | bool | None) -> RetryPolicy:
        """Effective policy of one step. Queries and mutations are never retried on error."""
        if kind != "action":
            return NO_RETRY
        choice = retry if retry is not None else self.retry
        if choice is None:
            choice = self.manager.retry_actions_by_default
        if choice is True:
            return self.manager.default_retry
        if choice is False:
            return NO_RETRY
        return choice

    def validate_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """Check `args` against the workflow's parameters; coerce by annotation."""
        from .validation import coerce

        known = {p.name for p in self.params}
        unknown = sorted(set(args) - known)
        if unknown:
            expected = ", ".join(sorted(known)) or "none"
            raise InvalidArguments(
                f"workflow {self.name} has no argument {unknown[0]!r} (it takes: {expected})"
            )
        out: dict[str, Any] = {}
        for p in self.params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.name not in args:
                if p.default is p.empty:
                    raise InvalidArguments(
                        f"workflow {self.name} needs argument {p.name!r} (--arg {p.name}=...)"
                    )
                out[p.name] = p.default  # recorded, so a later change of default is no surprise
                continue
            out[p.name] = coerce(args[p.name], p.annotation, what=f"argument {p.name!r}")
        return out

    def validate_result(self, value: Any) -> Any:
        if self.returns is None:
            return value
        from .validation import coerce

        return coerce(value, self.returns, what=f"return value of workflow {self.name}")
