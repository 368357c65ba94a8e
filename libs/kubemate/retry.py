"""The one retry/backoff helper: every adapter retries through here, never with its own loop.

Only :class:`~kubemate.errors.BackendUnavailable` (which includes
:class:`~kubemate.errors.RetryableInferenceError`) is retried by default: adapters map vendor
errors to ours first, so "is this retryable" is decided once, in the mapping, not at each call
site. Waits use exponential backoff with full jitter (a uniformly random wait in a window that
doubles per attempt), so many clients throttled at once do not retry in lockstep. A
``retry_after`` carried by the error (the runtime's Retry-After) replaces the jittered wait, capped
at ``max_delay`` so one answer cannot stall a request beyond the caller's budget.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
)

from kubemate.errors import BackendUnavailable
from kubemate.logs import get_logger

T = TypeVar("T")

log = get_logger(__name__)

RETRYABLE: tuple[type[BaseException], ...] = (BackendUnavailable,)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry. ``max_attempts`` counts the first try; ``max_delay`` caps every wait."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    retry_on: tuple[type[BaseException], ...] = RETRYABLE

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")


NO_RETRY = RetryPolicy(max_attempts=1)


def backoff_delay(
    attempt: int,
    error: BaseException | None,
    *,
    base_delay: float,
    max_delay: float,
    rng: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        return min(max(float(retry_after), 0.0), max_delay)
    # min() before the power would overflow on absurd attempt counts, so cap the exponent too.
    window = min(max_delay, base_delay * (2 ** min(attempt - 1, 62)))
    return rng(0.0, window)


class _Wait:
    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return backoff_delay(
            state.attempt_number,
            error,
            base_delay=self._policy.base_delay,
            max_delay=self._policy.max_delay,
        )


def _log_retry(operation: str, policy: RetryPolicy) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning(
            "retry.scheduled",
            operation=operation,
            attempt=state.attempt_number,
            max_attempts=policy.max_attempts,
            delay_s=round(state.upcoming_sleep, 3),
            error_type=type(error).__name__,
            error=str(error),
            retry_after=getattr(error, "retry_after", None),
        )

    return before_sleep


async def retry_async(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy | None = None,
    operation: str = "",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Await ``fn()`` until it succeeds, a non-retryable error escapes, or attempts run out.

    After the last attempt the last error itself is raised (not tenacity's ``RetryError``), so
    callers and the HTTP layer see our error tree only. ``sleep`` is injectable for tests.
    """
    policy = policy or RetryPolicy()
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=_Wait(policy),
        retry=retry_if_exception_type(policy.retry_on),
        before_sleep=_log_retry(operation, policy),
        sleep=sleep,
        reraise=True,
    )

    # tenacity awaits only coroutine functions; a lambda returning a coroutine would be
    # treated as a plain callable and its coroutine returned unawaited.
    async def call() -> T:
        return await fn()

    return await retrying(call)


def retry_sync(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy | None = None,
    operation: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """The blocking twin of :func:`retry_async`, for CLI tools and worker code without a loop."""
    policy = policy or RetryPolicy()
    retrying = Retrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=_Wait(policy),
        retry=retry_if_exception_type(policy.retry_on),
        before_sleep=_log_retry(operation, policy),
        sleep=sleep,
        reraise=True,
    )
    return retrying(fn)


class ConcurrencyLimit:
    """At most ``limit`` callers inside ``async with`` at once (``max_concurrency`` settings).

    A thin wrapper over :class:`asyncio.Semaphore` that remembers its limit and reports how many
    slots are in use. The semaphore is made per event loop: an asyncio primitive that once had to
    wait is bound to that loop, and adapters built once may outlive a loop (tests, CLI tools).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_use = 0

    @property
    def in_use(self) -> int:
        return self._in_use

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._semaphore = asyncio.Semaphore(self.limit)
            self._in_use = 0
        await self._semaphore.acquire()
        self._in_use += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._in_use -= 1
        self._semaphore.release()
