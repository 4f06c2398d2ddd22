"""The Step object handed to workflow code, and `current_step()` for code inside a step."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .manager import RetryPolicy

if TYPE_CHECKING:
    import asyncio
    import logging

    from .manager import WorkflowDef
    from .replay import RunDriver


@dataclass(frozen=True)
class StepContext:
    """What a running step may know about itself."""

    run_id: str
    step: int  # -1 inside on_complete
    attempt: int  # inside on_complete: which call this is
    key: str = ""  # the idempotency key, when it is not run id and step (on_complete's)

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts and worker restarts: use it to make mutations safe."""
        return self.key or f"{self.run_id}-{self.step}"


_current: ContextVar[StepContext | None] = ContextVar("wfl_current_step", default=None)


def current_step() -> StepContext:
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("wfl.current_step() is only available inside a running step")
    return ctx


# Delays longer than a century are mistakes (and past year 9999 no date can show them); NaN
# never comes due and would sit at the top of the worker's timer heap.
MAX_DELAY = 100 * 365.25 * 86400.0


def _delay(value: float | None, what: str) -> float | None:
    if value is not None and not (math.isfinite(value) and abs(value) <= MAX_DELAY):
        raise ValueError(
            f"{what} must be a finite number of seconds, at most 100 years; got {value}"
        )
    return value


def _wake_time(value: float | None, now: float) -> float | None:
    if value is not None and not (math.isfinite(value) and 0 < value <= now + MAX_DELAY):
        raise ValueError(f"run_at= must be a real time, at most 100 years from now; got {value}")
    return value


def seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def epoch(value: datetime | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("run_at= needs an aware datetime (with a timezone)")
        return value.timestamp()
    return float(value)


@dataclass(frozen=True)
class StepOptions:
    name: str | None = None
    run_after: float | None = None
    run_at: float | None = None
    retry: RetryPolicy | bool | None = None
    timeout: float | None = None
    unstable_args: bool = False


class Step:
    """Workflow code's handle on its run. Each call is recorded as one numbered step."""

    def __init__(self, driver: RunDriver, defaults: dict[str, Any] | None = None) -> None:
        self._driver = driver
        self._defaults = defaults or {}  # from with_options(); a call's own options win
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    def with_options(self, **defaults: Any) -> Step:
        """A step object whose run_query/run_mutation/run_action/run_workflow calls use these
        options unless the call gives its own (Convex's `withOptions`): `retry=`,
        `unstable_args=`, `timeout=`."""
        unknown = set(defaults) - _DEFAULTABLE
        if unknown:
            raise TypeError(
                f"with_options() takes {', '.join(sorted(_DEFAULTABLE))}, "
                f"not {sorted(unknown)[0]!r}"
            )
        _options(defaults)  # the same checks as on a call, now rather than at the first call
        step = Step(self._driver, {**self._defaults, **defaults})
        step._logger = self._logger
        return step

    @property
    def run_id(self) -> str:
        return self._driver.run_id

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """Logs each line once: lines logged while replaying recorded history are dropped."""
        if self._logger is None:
            self._logger = _step_logger(self._driver)
        return self._logger

    def run_query(
        self, fn: Callable[..., Any], args: dict[str, Any] | None = None, **options: Any
    ) -> asyncio.Future[Any]:
        return self._driver.call_step("query", fn, args, self._opts(options))

    def run_mutation(
        self, fn: Callable[..., Any], args: dict[str, Any] | None = None, **options: Any
    ) -> asyncio.Future[Any]:
        return self._driver.call_step("mutation", fn, args, self._opts(options))

    def run_action(
        self, fn: Callable[..., Any], args: dict[str, Any] | None = None, **options: Any
    ) -> asyncio.Future[Any]:
        return self._driver.call_step("action", fn, args, self._opts(options))

    def run_workflow(
        self, workflow: WorkflowDef, args: dict[str, Any] | None = None, **options: Any
    ) -> asyncio.Future[Any]:
        """Run `workflow` as a child run; returns its result or raises StepFailed."""
        return self._driver.call_step("workflow", workflow, args, self._opts(options))

    def _opts(self, options: dict[str, Any]) -> StepOptions:
        if not options and not self._defaults:
            return _NO_OPTIONS  # (the common call: no checks to make, nothing to build)
        if self._defaults:
            given = {k: v for k, v in options.items() if v is not None}
            options = {**self._defaults, **given}
        opts = _options(options)
        _wake_time(opts.run_at, self._driver.clock.now())
        return opts

    def sleep(self, duration: float | timedelta, *, name: str | None = None) -> asyncio.Future[Any]:
        delay = _delay(seconds(duration), "step.sleep() duration") or 0.0
        return self._driver.call_step(
            "sleep", None, None, StepOptions(name=name or "sleep", run_after=delay)
        )

    def await_event(
        self, name: str, timeout: float | timedelta | None = None, *, type: Any = None
    ) -> asyncio.Future[Any]:
        """The value of the next event `name` sent to this run (buffered if sent earlier).
        With `type=`, the value is validated and coerced as workflow arguments are; a value
        that does not fit fails this step. An event sent with an error raises EventFailed."""
        return self._driver.call_event(
            name, _delay(seconds(timeout), "await_event timeout="), value_type=type
        )

    def now(self) -> datetime:
        """The time, recorded the first time and the same on every replay."""
        return datetime.fromtimestamp(self._driver.call_value("now"), UTC)

    def random(self) -> float:
        """A random float in [0, 1), recorded once."""
        return float(self._driver.call_value("random"))

    def uuid(self) -> str:
        """A random UUID (as a string), recorded once."""
        return str(self._driver.call_value("uuid"))

    async def continue_as_new(self, args: dict[str, Any] | None = None) -> Any:
        """End this run and go on in a fresh run of the same workflow with `args` (and an
        empty journal): `return await step.continue_as_new({"cursor": c})`. The run ends
        completed with `{"continued_as": NEW_ID}`; on_complete is called at the chain's end."""
        return await self._driver.continue_as_new(args)

    async def set_progress(self, value: Any) -> None:
        """Publish `value` (serializable, at most 64 KiB) as the run's progress; readers see
        the latest at once. It takes no step number: adding or removing these calls never
        breaks the replay of a running run, and a replay does not record them again."""
        await self._driver.set_progress(value)

    def version(self) -> int:
        """The workflow version this run's history was written under."""
        return self._driver.state.version


_NO_OPTIONS = StepOptions()  # frozen: one shared instance
_OPTION_NAMES = frozenset(StepOptions.__dataclass_fields__)
_DEFAULTABLE = frozenset({"retry", "unstable_args", "timeout"})


def _options(options: dict[str, Any]) -> StepOptions:
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise TypeError(f"unknown step option {sorted(unknown)[0]!r}")
    if options.get("run_after") is not None and options.get("run_at") is not None:
        raise TypeError("give run_after= or run_at=, not both")
    return StepOptions(
        name=options.get("name"),
        run_after=_delay(seconds(options.get("run_after")), "run_after="),
        run_at=epoch(options.get("run_at")),
        retry=options.get("retry"),
        timeout=_delay(seconds(options.get("timeout")), "timeout="),
        unstable_args=bool(options.get("unstable_args", False)),
    )


def _step_logger(driver: RunDriver) -> logging.LoggerAdapter[logging.Logger]:
    import logging  # here: flow files import this module, and `wfl start` stays fast

    class StepLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
        def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
            if not driver.replaying:
                super().log(level, msg, *args, **kwargs)

    logger = logging.getLogger(f"wfl.workflow.{driver.workflow.name}")
    return StepLogger(logger, {"run_id": driver.run_id})
