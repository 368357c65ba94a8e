"""Pull tasks: shared by concurrent requests, always ending COMPLETED or FAILED with a reason.

The runtime here is a scripted stand-in (no network): it yields the progress it is given and
can fail half-way the way a dropped connection does (the transport's retryable error).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from kubemate.errors import RetryableInferenceError
from kubemate.models.base import PullProgress
from kubemate_model_manager.pulls import PullState, PullTasks


class ScriptedRuntime:
    id = "scripted"
    kind = "ollama"

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.release = asyncio.Event()
        self.pulls = 0

    def canonical(self, name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    async def pull(self, name: str) -> AsyncGenerator[PullProgress, None]:
        self.pulls += 1
        for step, done in enumerate((0, 50, 100)):
            if self.fail_after is not None and step == self.fail_after:
                raise RetryableInferenceError("scripted: peer closed connection mid-body")
            yield PullProgress(status="pulling", completed=done, total=100)
            if step == 0:
                await self.release.wait()
        yield PullProgress(status="success", completed=100, total=100)


async def test_concurrent_pulls_share_one_task() -> None:
    runtime = ScriptedRuntime()
    pulls = PullTasks()
    first, created = pulls.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    second, created_again = pulls.start(runtime, "llama3.2:latest", "globex/bob")  # type: ignore[arg-type]
    assert created and not created_again and first is second
    await pulls.wait_started(first, 5)
    assert first.state == PullState.PULLING and first.total == 100
    runtime.release.set()
    seen = [s async for s in pulls.follow(first.id)]
    assert seen[-1]["state"] == "COMPLETED" and seen[-1]["completed"] == 100
    assert runtime.pulls == 1
    # Once finished, a new request starts a new pull.
    third, created = pulls.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    assert created and third.id != first.id
    runtime.release.set()
    await pulls.aclose()


async def test_failure_half_way_ends_failed_with_the_reason() -> None:
    runtime = ScriptedRuntime(fail_after=1)
    runtime.release.set()
    pulls = PullTasks()
    task, _ = pulls.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    seen = [s async for s in pulls.follow(task.id)]
    assert seen[-1]["state"] == "FAILED"
    assert "peer closed connection" in seen[-1]["error"]
    assert seen[-1]["error_type"] == "inference-unavailable"
    assert task.finished_at is not None


async def test_stopping_the_manager_fails_running_pulls() -> None:
    runtime = ScriptedRuntime()
    pulls = PullTasks()
    task, _ = pulls.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    await pulls.wait_started(task, 5)
    await pulls.aclose()
    assert task.state == PullState.FAILED and task.error_type == "cancelled"
