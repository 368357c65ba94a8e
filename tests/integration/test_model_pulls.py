"""Pull tasks in real Redis, shared by model manager replicas.

Each ``PullTasks`` instance is one replica; two of them on one Redis (under a key prefix unique
to the test) are two replicas of the service. The runtime is a scripted STAND-IN (no network):
it yields the progress it is given, holds the pull open until the test releases it, and can fail
half-way the way a dropped connection does (the transport's retryable error). It counts the
downloads it was asked for, so a test can tell one shared pull from two.

The dead-replica test runs its owner in a separate process and SIGKILLs it mid-pull, so no
cleanup code of the owner runs: only the lock's expiry tells the other replica.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from kubemate.errors import BackendUnavailable, RetryableInferenceError
from kubemate.models_config import PullsConfig
from kubemate_model_manager.pulls import ABANDONED, PullState, PullTasks
from kubemate_model_manager.runtimes.base import PullProgress
from tests.fixtures.services import MACHINE_REDIS

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


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


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(MACHINE_REDIS)
    yield client
    await client.aclose()


@pytest.fixture
async def config(redis: aioredis.Redis) -> AsyncIterator[PullsConfig]:
    prefix = f"test:pulls:{uuid.uuid4().hex[:8]}"
    yield PullsConfig(key_prefix=prefix, lock_ttl_s=3.0, progress_interval_s=0, follow_block_s=0.2)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*")]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
async def replicas(
    redis: aioredis.Redis, config: PullsConfig
) -> AsyncIterator[tuple[PullTasks, PullTasks]]:
    a = PullTasks(redis, config, replica="replica-a")
    b = PullTasks(aioredis.Redis.from_url(MACHINE_REDIS), config, replica="replica-b")
    yield a, b
    await a.aclose()
    await b.aclose()
    await b._redis.aclose()


async def test_concurrent_pulls_share_one_task(replicas: tuple[PullTasks, PullTasks]) -> None:
    pulls, _ = replicas
    runtime = ScriptedRuntime()
    first, created = await pulls.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    second, created_again = await pulls.start(runtime, "llama3.2:latest", "globex/bob")  # type: ignore[arg-type]
    assert created and not created_again and first.id == second.id
    started = await pulls.wait_started(first, 5)
    assert started.state == PullState.PULLING and started.total == 100
    runtime.release.set()
    seen = [s async for s in pulls.follow(first.id)]
    assert seen[-1]["state"] == "COMPLETED" and seen[-1]["completed"] == 100
    assert runtime.pulls == 1
    # Once finished, a new request starts a new pull.
    third, created = await pulls.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    assert created and third.id != first.id
    assert [t.id for t in await pulls.all()][:2] == [third.id, first.id]


async def test_failure_half_way_ends_failed_with_the_reason(
    replicas: tuple[PullTasks, PullTasks],
) -> None:
    pulls, _ = replicas
    runtime = ScriptedRuntime(fail_after=1)
    runtime.release.set()
    task, _ = await pulls.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    seen = [s async for s in pulls.follow(task.id)]
    assert seen[-1]["state"] == "FAILED"
    assert "peer closed connection" in seen[-1]["error"]
    assert seen[-1]["error_type"] == "inference-unavailable"
    assert (await pulls.get(task.id)).finished_at is not None


async def test_stopping_the_manager_fails_running_pulls(
    replicas: tuple[PullTasks, PullTasks],
) -> None:
    pulls, other = replicas
    runtime = ScriptedRuntime()
    task, _ = await pulls.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    await pulls.wait_started(task, 5)
    await pulls.aclose()
    stopped = await other.get(task.id)
    assert stopped.state == PullState.FAILED and stopped.error_type == "cancelled"
    # The lock went with it: the other replica can pull the model again at once.
    again, created = await other.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    assert created and again.id != task.id


async def test_two_replicas_pulling_the_same_model_share_one_download(
    replicas: tuple[PullTasks, PullTasks],
) -> None:
    a, b = replicas
    runtime = ScriptedRuntime()  # both replicas reach the same runtime, as with one Ollama
    (on_a, created_a), (on_b, created_b) = await asyncio.gather(
        a.start(runtime, "llama3.2", "acme/alice"),  # type: ignore[arg-type]
        b.start(runtime, "llama3.2:latest", "globex/bob"),  # type: ignore[arg-type]
    )
    assert on_a.id == on_b.id and sorted([created_a, created_b]) == [False, True]
    owner, other = (a, b) if created_a else (b, a)
    # Progress of the owner's pull is visible from the other replica.
    started = await other.wait_started(on_a, 5)
    assert started.state == PullState.PULLING and started.total == 100
    assert (await other.get(on_a.id)).owner == owner.replica
    # A third request, on either replica, joins the same task while it runs.
    joined, created = await other.start(runtime, "llama3.2", "acme/carol")  # type: ignore[arg-type]
    assert joined.id == on_a.id and not created
    runtime.release.set()
    seen = [s async for s in other.follow(on_a.id)]
    assert seen[-1]["state"] == "COMPLETED" and seen[-1]["completed"] == 100
    assert runtime.pulls == 1


async def test_a_follower_on_another_replica_sees_every_stage(
    replicas: tuple[PullTasks, PullTasks],
) -> None:
    a, b = replicas
    runtime = ScriptedRuntime()
    task, _ = await a.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    await b.wait_started(task, 5)
    seen: list[dict[str, object]] = []

    async def follow() -> None:
        async for snapshot in b.follow(task.id):
            seen.append(snapshot)

    follower = asyncio.create_task(follow())
    # The first snapshot comes from Redis: waited for, not assumed within a fixed delay.
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.1)
    assert seen and seen[-1]["state"] == "PULLING" and not follower.done()
    runtime.release.set()
    await asyncio.wait_for(follower, 5)
    assert [s["completed"] for s in seen][-1] == 100
    assert seen[-1]["state"] == "COMPLETED" and seen[-1]["finished_at"]
    assert len({s["updated_at"] for s in seen}) == len(seen)  # one event per change


_OWNER = textwrap.dedent(
    """
    import asyncio, sys
    import redis.asyncio as aioredis
    from kubemate_model_manager.runtimes.base import PullProgress
    from kubemate.models_config import PullsConfig
    from kubemate_model_manager.pulls import PullTasks

    class Hanging:
        id = "scripted"
        kind = "ollama"
        def canonical(self, name):
            return name
        async def pull(self, name):
            yield PullProgress(status="pulling", completed=10, total=100)
            await asyncio.Event().wait()

    async def main():
        redis = aioredis.Redis.from_url(sys.argv[1])
        config = PullsConfig(key_prefix=sys.argv[2], lock_ttl_s=3.0, progress_interval_s=0)
        pulls = PullTasks(redis, config, replica="doomed")
        task, _ = await pulls.start(Hanging(), "llama3.2:latest", "acme/alice")
        await pulls.wait_started(task, 5)
        print("TASK=" + task.id, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_a_pull_whose_replica_died_ends_failed_with_a_reason(
    replicas: tuple[PullTasks, PullTasks], config: PullsConfig
) -> None:
    _, survivor = replicas
    owner = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _OWNER,
        MACHINE_REDIS,
        config.key_prefix,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert owner.stdout is not None
        stdout = owner.stdout

        async def task_line() -> str:  # the owner's structured logs share its stdout
            async for raw in stdout:
                if raw.startswith(b"TASK="):
                    return raw.decode().strip().removeprefix("TASK=")
            raise AssertionError("the owner process ended before starting its pull")

        task_id = await asyncio.wait_for(task_line(), 30)
        running = await survivor.get(task_id)
        assert running.state == PullState.PULLING and running.owner == "doomed"
        assert running.completed == 10
    finally:
        owner.send_signal(signal.SIGKILL)
        await owner.wait()
    # Nobody renews the lock now; the follower on the survivor sees the task fail when it expires.
    seen = [s async for s in survivor.follow(task_id)]
    assert seen[-1]["state"] == "FAILED" and seen[-1]["error_type"] == ABANDONED
    assert "stopped" in seen[-1]["error"] and seen[-1]["finished_at"]
    # And the model can be pulled again.
    runtime = ScriptedRuntime()
    runtime.release.set()
    again, created = await survivor.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    assert created and again.id != task_id


async def test_the_sweeper_fails_abandoned_pulls_nobody_reads(
    replicas: tuple[PullTasks, PullTasks], redis: aioredis.Redis, config: PullsConfig
) -> None:
    """An owner cut off mid-pull (here: its lock deleted, as an expiry would) is failed by the
    sweep every replica runs, without anyone asking for the task."""
    a, b = replicas
    runtime = ScriptedRuntime()
    task, _ = await a.start(runtime, "llama3.2", "acme/alice")  # type: ignore[arg-type]
    await a.wait_started(task, 5)
    await redis.delete(f"{config.key_prefix}:lock:scripted|llama3.2:latest")
    assert await b.sweep() == 1
    failed = await b.get(task.id)
    assert failed.state == PullState.FAILED and failed.error_type == ABANDONED
    # The old owner notices at its next write or renewal, and stops downloading.
    runtime.release.set()
    for _ in range(50):
        if not a._workers:
            break
        await asyncio.sleep(0.1)
    assert not a._workers
    assert (await b.get(task.id)).state == PullState.FAILED


async def test_an_unreachable_redis_is_a_503_problem_not_a_vendor_error(
    config: PullsConfig,
) -> None:
    down = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    pulls = PullTasks(down, config)
    try:
        with pytest.raises(BackendUnavailable, match="pull task store"):
            await pulls.start(ScriptedRuntime(), "llama3.2", "acme/alice")  # type: ignore[arg-type]
        with pytest.raises(BackendUnavailable):
            await pulls.get("0" * 32)
        with pytest.raises(BackendUnavailable):
            await pulls.all()
        with pytest.raises(BackendUnavailable):
            [s async for s in pulls.follow("0" * 32)]
    finally:
        await pulls.aclose()
        await down.aclose()
