"""The shared retry helper: what it retries, how long it waits, what it raises at the end."""

from __future__ import annotations

import asyncio

import pytest

from kubemate.errors import (
    BackendUnavailable,
    InferenceError,
    RetryableInferenceError,
    UnknownModel,
)
from kubemate.retry import (
    ConcurrencyLimit,
    RetryPolicy,
    backoff_delay,
    retry_async,
    retry_sync,
)


class Flaky:
    """Raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"

    async def run(self) -> str:
        return self()


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)

    def sync(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_retries_then_succeeds() -> None:
    flaky, sleeps = Flaky(RetryableInferenceError("busy"), BackendUnavailable("down")), Sleeps()
    result = await retry_async(flaky.run, policy=RetryPolicy(max_attempts=3), sleep=sleeps)
    assert result == "ok"
    assert flaky.calls == 3
    assert len(sleeps.delays) == 2


async def test_retry_after_replaces_the_jittered_wait() -> None:
    flaky, sleeps = Flaky(RetryableInferenceError("429", retry_after=7.0)), Sleeps()
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=30.0)
    assert await retry_async(flaky.run, policy=policy, sleep=sleeps) == "ok"
    assert sleeps.delays == [7.0]


async def test_retry_after_is_capped_at_max_delay() -> None:
    flaky, sleeps = Flaky(RetryableInferenceError("429", retry_after=3600)), Sleeps()
    policy = RetryPolicy(max_attempts=2, max_delay=5.0)
    await retry_async(flaky.run, policy=policy, sleep=sleeps)
    assert sleeps.delays == [5.0]


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    last = RetryableInferenceError("third")
    flaky = Flaky(RetryableInferenceError("first"), RetryableInferenceError("second"), last)
    sleeps = Sleeps()
    with pytest.raises(RetryableInferenceError) as info:
        await retry_async(flaky.run, policy=RetryPolicy(max_attempts=3), sleep=sleeps)
    assert info.value is last
    assert flaky.calls == 3
    assert len(sleeps.delays) == 2


@pytest.mark.parametrize("error", [InferenceError("bad request"), UnknownModel("no such model")])
async def test_does_not_retry_non_retryable_errors(error: Exception) -> None:
    flaky, sleeps = Flaky(error), Sleeps()
    with pytest.raises(type(error)) as info:
        await retry_async(flaky.run, policy=RetryPolicy(max_attempts=5), sleep=sleeps)
    assert info.value is error
    assert flaky.calls == 1
    assert sleeps.delays == []


async def test_does_not_retry_programming_errors() -> None:
    flaky = Flaky(KeyError("bug"))
    with pytest.raises(KeyError):
        await retry_async(flaky.run, policy=RetryPolicy(max_attempts=5), sleep=Sleeps())
    assert flaky.calls == 1


def test_full_jitter_window_doubles_and_is_capped() -> None:
    def top(low: float, high: float) -> float:  # the window's upper edge instead of a draw
        return high

    windows = [backoff_delay(n, None, base_delay=0.5, max_delay=3.0, rng=top) for n in range(1, 6)]
    assert windows == [0.5, 1.0, 2.0, 3.0, 3.0]
    draws = [backoff_delay(3, None, base_delay=0.5, max_delay=3.0) for _ in range(200)]
    assert all(0.0 <= d <= 2.0 for d in draws)
    assert len(set(draws)) > 100  # jittered, not fixed


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert 0.0 <= backoff_delay(10_000, None, base_delay=1.0, max_delay=60.0) <= 60.0


def test_sync_twin_behaves_the_same() -> None:
    flaky, sleeps = Flaky(RetryableInferenceError("x", retry_after=1.5)), Sleeps()
    assert retry_sync(flaky, policy=RetryPolicy(max_attempts=2), sleep=sleeps.sync) == "ok"
    assert sleeps.delays == [1.5]
    failing = Flaky(InferenceError("no"))
    with pytest.raises(InferenceError):
        retry_sync(failing, policy=RetryPolicy(max_attempts=3), sleep=sleeps.sync)
    assert failing.calls == 1


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


async def test_concurrency_limit_bounds_parallel_callers() -> None:
    limit = ConcurrencyLimit(2)
    peak = 0

    async def work() -> None:
        nonlocal peak
        async with limit:
            peak = max(peak, limit.in_use)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(work() for _ in range(8)))
    assert peak == 2
    assert limit.in_use == 0


def test_concurrency_limit_survives_a_new_event_loop() -> None:
    limit = ConcurrencyLimit(1)

    async def contended() -> None:
        async def hold() -> None:
            async with limit:
                await asyncio.sleep(0.001)

        await asyncio.gather(hold(), hold())  # makes the semaphore wait, binding it to a loop

    asyncio.run(contended())
    asyncio.run(contended())  # a second loop: must not raise "bound to a different event loop"


async def test_accepts_callables_returning_awaitables() -> None:
    flaky = Flaky(RetryableInferenceError("once"))
    result = await retry_async(lambda: flaky.run(), sleep=Sleeps())
    assert result == "ok"
    assert flaky.calls == 2
