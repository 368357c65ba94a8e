"""Pull tasks, shared by every model manager replica through Redis.

Two requests to pull the same model on the same runtime while a pull runs share its task, on
whichever replica they land. Every pull ends COMPLETED or FAILED with the reason: a connection
lost half-way fails the task with the transport's error, and a replica that dies mid-pull stops
renewing its lock, so the next replica to look at the task (a reader, a follower, or the sweeper
every replica runs) marks it FAILED.

Why Redis rather than the metadata DB's tasks table: a pull needs a lease (SET NX PX, renewed
while its owner lives, gone when it dies) and pushed progress that followers block on (a stream);
the DB gives neither without polling, and progress written several times a second would churn a
table kept for ingestion's audit trail. A pull's state is only worth keeping for
``keep_finished_s``, and the model manager already depends on Redis for its assignments.

Keys, under ``PullsConfig.key_prefix``:

- ``task:{id}``: hash with model, runtime, state, status, bytes_done, bytes_total, error, ...
- ``lock:{runtime}|{model}``: the id of the running pull; SET NX PX, renewed by its owner.
- ``events:{id}``: stream with one entry per change of the task; the SSE endpoint follows it.
- ``index``: sorted set of task ids by creation time, for the listing.

Every state change is a Lua script, so "claim the lock and create the task", "write unless the
task was already failed by someone else" and "fail it if nobody holds its lock" are atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from kubemate.errors import BackendUnavailable, KubemateError, TaskNotFound, UnknownModel
from kubemate.logs import get_logger
from kubemate.models_config import PullsConfig
from kubemate.queue import LeaseLost
from kubemate_model_manager.runtimes.base import ModelRuntime

log = get_logger(__name__)

# error_type of a task whose owner stopped renewing its lock (died, or cut off from Redis).
ABANDONED = "pull-abandoned"
ABANDONED_REASON = (
    "the model manager replica running this pull stopped (its lock expired before the pull "
    "finished); pull again"
)
# Entries kept per task stream: followers only need the latest, the rest is slack for slow ones.
_STREAM_MAXLEN = 100


class PullState(StrEnum):
    PENDING = "PENDING"
    PULLING = "PULLING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (PullState.COMPLETED, PullState.FAILED)


def _now() -> datetime:
    return datetime.now(UTC)


def _time(value: str) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass
class PullTask:
    """One task as read from Redis (or as its owner is about to write it)."""

    id: str
    model: str
    runtime: str
    requested_by: str
    owner: str = ""
    state: PullState = PullState.PENDING
    status: str = "queued"
    completed: int = 0
    total: int = 0
    error: str | None = None
    error_type: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    version: int = 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "task_id": self.id,
            "model": self.model,
            "runtime": self.runtime,
            "state": self.state.value,
            "status": self.status,
            "completed": self.completed,
            "total": self.total,
            "error": self.error,
            "error_type": self.error_type,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }

    def fields(self) -> dict[str, str]:
        """The hash fields (Redis stores strings; empty means none). ``version`` is left to the
        scripts, which bump it on every write."""
        return {
            "task_id": self.id,
            "model": self.model,
            "runtime": self.runtime,
            "requested_by": self.requested_by,
            "owner": self.owner,
            "state": self.state.value,
            "status": self.status,
            "bytes_done": str(self.completed),
            "bytes_total": str(self.total),
            "error": self.error or "",
            "error_type": self.error_type or "",
            "created_at": self.created_at.isoformat() if self.created_at else "",
            "updated_at": self.updated_at.isoformat() if self.updated_at else "",
            "finished_at": self.finished_at.isoformat() if self.finished_at else "",
        }

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> PullTask:
        h = {_str(k): _str(v) for k, v in raw.items()}
        return cls(
            id=h["task_id"],
            model=h.get("model", ""),
            runtime=h.get("runtime", ""),
            requested_by=h.get("requested_by", ""),
            owner=h.get("owner", ""),
            state=PullState(h.get("state") or PullState.PENDING),
            status=h.get("status", ""),
            completed=int(h.get("bytes_done") or 0),
            total=int(h.get("bytes_total") or 0),
            error=h.get("error") or None,
            error_type=h.get("error_type") or None,
            created_at=_time(h.get("created_at", "")),
            updated_at=_time(h.get("updated_at", "")),
            finished_at=_time(h.get("finished_at", "")),
            version=int(h.get("version") or 0),
        )


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flat(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


# KEYS: lock, task, events, index. ARGV: task id, lock ttl ms, created (ms), stream maxlen,
# then the task's field/value pairs. Returns {1, id} when created, {0, running id} when joined.
_START = """
local current = redis.call('GET', KEYS[1])
if current then return {0, current} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
redis.call('HSET', KEYS[2], 'version', 1)
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'state', 'PENDING')
return {1, ARGV[1]}
"""

# The owner's write. KEYS: task, events, lock. ARGV: task id, stream maxlen, final (0/1),
# keep ms, then field/value pairs. Refused (0) when the task is already terminal (someone failed
# it as abandoned) or the lock is no longer ours: a replica that lost its lease must not write.
_WRITE = """
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or state == 'COMPLETED' or state == 'FAILED' then return 0 end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'state', redis.call('HGET', KEYS[1], 'state'),
  'bytes_done', redis.call('HGET', KEYS[1], 'bytes_done'),
  'bytes_total', redis.call('HGET', KEYS[1], 'bytes_total'))
if ARGV[3] == '1' then
  redis.call('DEL', KEYS[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
"""

# Fail a task nobody holds the lock of. KEYS: task, events, lock. ARGV: task id, now (ISO),
# reason, error type, stream maxlen, keep ms. Returns 1 when it failed the task.
_REAP = """
local state = redis.call('HGET', KEYS[1], 'state')
if (not state) or state == 'COMPLETED' or state == 'FAILED' then return 0 end
if redis.call('GET', KEYS[3]) == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'FAILED', 'status', 'failed', 'error', ARGV[3],
  'error_type', ARGV[4], 'updated_at', ARGV[2], 'finished_at', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'state', 'FAILED')
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return 1
"""

# KEYS: lock. ARGV: task id, ttl ms. Extends the lease only while it is still ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@contextlib.contextmanager
def _store_errors() -> Iterator[None]:
    """Redis failures reach callers as our 503 problem, not as a vendor exception."""
    try:
        yield
    except RedisError as exc:
        raise BackendUnavailable("the pull task store (Redis) is unavailable") from exc


class PullTasks:
    """The pull tasks of every replica sharing ``redis`` and ``config.key_prefix``."""

    def __init__(
        self,
        redis: aioredis.Redis,
        config: PullsConfig | None = None,
        *,
        replica: str | None = None,
        on_finished: Callable[[PullTask], None] | None = None,
    ) -> None:
        self._redis = redis
        self._config = config or PullsConfig()
        self._prefix = self._config.key_prefix.rstrip(":")
        # Named after the pod (the hostname) so logs and the task's owner say where a pull ran.
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._on_finished = on_finished
        self._ttl_ms = int(self._config.lock_ttl_s * 1000)
        self._keep_ms = int(self._config.keep_finished_s * 1000)
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._lost: set[str] = set()  # tasks whose lease this replica lost
        self._sweeper: asyncio.Task[None] | None = None
        self._start = redis.register_script(_START)
        self._write_script = redis.register_script(_WRITE)
        self._reap_script = redis.register_script(_REAP)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    # ---- keys --------------------------------------------------------------------------------

    def _task_key(self, task_id: str) -> str:
        return f"{self._prefix}:task:{task_id}"

    def _events_key(self, task_id: str) -> str:
        return f"{self._prefix}:events:{task_id}"

    def _lock_key(self, runtime: str, model: str) -> str:
        return f"{self._prefix}:lock:{runtime}|{model}"

    @property
    def _index_key(self) -> str:
        return f"{self._prefix}:index"

    # ---- starting and running a pull ---------------------------------------------------------

    async def start(
        self, runtime: ModelRuntime, name: str, requested_by: str
    ) -> tuple[PullTask, bool]:
        """The running pull of this model on this runtime (on any replica), or a new one run by
        this replica; True when new."""
        model = runtime.canonical(name)
        now = _now()
        task = PullTask(
            id=uuid.uuid4().hex,
            model=model,
            runtime=runtime.id,
            requested_by=requested_by[:200],
            owner=self.replica,
            created_at=now,
            updated_at=now,
            version=1,
        )
        lock = self._lock_key(runtime.id, model)
        with _store_errors():
            created, task_id = await self._start(
                keys=[lock, self._task_key(task.id), self._events_key(task.id), self._index_key],
                args=[
                    task.id,
                    self._ttl_ms,
                    int(now.timestamp() * 1000),
                    _STREAM_MAXLEN,
                    *_flat(task.fields()),
                ],
            )
        if not created:
            return await self.get(_str(task_id)), False
        self._workers[task.id] = asyncio.create_task(self._run(task, runtime, lock))
        log.info(
            "pull.started", task_id=task.id, model=model, runtime=runtime.id, replica=self.replica
        )
        return task, True

    async def _write(self, task: PullTask, lock: str, *, final: bool = False) -> None:
        task.updated_at = _now()
        if final:
            task.finished_at = task.updated_at
        written = await self._write_script(
            keys=[self._task_key(task.id), self._events_key(task.id), lock],
            args=[
                task.id,
                _STREAM_MAXLEN,
                "1" if final else "0",
                self._keep_ms,
                *_flat(task.fields()),
            ],
        )
        if not written:
            # The lock is no longer ours, or the task was already failed.
            raise LeaseLost(task.id)
        task.version += 1

    async def _keep_lease(self, task_id: str, lock: str, worker: asyncio.Task[None]) -> None:
        """Renews the lock while the pull runs; cancels the pull once the lock is lost, so two
        replicas never download the same model at once."""
        interval = self._config.lock_ttl_s / 3
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                if await self._renew(keys=[lock], args=[task_id, self._ttl_ms]):
                    renewed = time.monotonic()
                    continue
            except RedisError as exc:
                log.warning("pull.lease_renewal_failed", task_id=task_id, error=type(exc).__name__)
                if time.monotonic() - renewed < self._config.lock_ttl_s:
                    continue  # the lock may still be ours: try again before it expires
            log.warning("pull.lease_lost", task_id=task_id, replica=self.replica)
            self._lost.add(task_id)
            await _cancel_until_done([worker])
            return

    async def _run(self, task: PullTask, runtime: ModelRuntime, lock: str) -> None:
        current = asyncio.current_task()
        assert current is not None
        lease = asyncio.create_task(self._keep_lease(task.id, lock, current))
        finished = False
        try:
            task.state, task.status = PullState.PULLING, "starting"
            await self._write(task, lock)
            written_at = time.monotonic()
            async for progress in runtime.pull(task.model):
                changed = progress.status != task.status
                task.status = progress.status
                task.completed = progress.completed
                task.total = max(progress.total, task.total)
                if changed or time.monotonic() - written_at >= self._config.progress_interval_s:
                    await self._write(task, lock)
                    written_at = time.monotonic()
            task.state, task.status = PullState.COMPLETED, "success"
            await self._write(task, lock, final=True)
            finished = True
            log.info("pull.completed", task_id=task.id, model=task.model, runtime=task.runtime)
        except asyncio.CancelledError:
            # A lost lease is not ours to write: the finally block fails it as abandoned.
            if task.id not in self._lost:
                finished = await self._fail(
                    task, lock, "the model manager stopped during the pull", "cancelled"
                )
            raise
        except LeaseLost:
            log.warning("pull.lease_lost", task_id=task.id, replica=self.replica)
        except KubemateError as exc:
            finished = await self._fail(task, lock, exc.detail, exc.type_slug)
        except RedisError as exc:
            # Progress could not be recorded: stop downloading what nobody can follow.
            log.error("pull.redis_failed", task_id=task.id, error=type(exc).__name__)
        except Exception as exc:  # the task must end FAILED whatever went wrong
            log.error("pull.crashed", task_id=task.id, exc_info=exc)
            finished = await self._fail(
                task, lock, f"internal error: {type(exc).__name__}", "internal-error"
            )
        finally:
            lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease
            if not finished:
                # Our own write did not end it: free the lock so the task is failed now rather
                # than after the lock's expiry.
                with contextlib.suppress(RedisError):
                    await self._release(keys=[lock], args=[task.id])
                    await self._reap(task.id, task.runtime, task.model, ABANDONED_REASON)
            self._workers.pop(task.id, None)
            self._lost.discard(task.id)
            if self._on_finished is not None:
                self._on_finished(task)

    async def _fail(self, task: PullTask, lock: str, reason: str, slug: str) -> bool:
        task.state, task.status, task.error, task.error_type = (
            PullState.FAILED,
            "failed",
            reason,
            slug,
        )
        log.warning("pull.failed", task_id=task.id, model=task.model, error=reason)
        try:
            await self._write(task, lock, final=True)
        except (LeaseLost, RedisError):
            return False
        return True

    # ---- orphans -----------------------------------------------------------------------------

    async def _reap(self, task_id: str, runtime: str, model: str, reason: str) -> bool:
        reaped = await self._reap_script(
            keys=[
                self._task_key(task_id),
                self._events_key(task_id),
                self._lock_key(runtime, model),
            ],
            args=[task_id, _now().isoformat(), reason, ABANDONED, _STREAM_MAXLEN, self._keep_ms],
        )
        if reaped:
            log.warning("pull.abandoned", task_id=task_id, model=model, runtime=runtime)
        return bool(reaped)

    async def _reap_if_orphaned(self, task: PullTask) -> PullTask:
        if task.state.terminal or task.id in self._workers:
            return task
        if await self._reap(task.id, task.runtime, task.model, ABANDONED_REASON):
            return await self._read(task.id) or task
        return task

    async def sweep(self) -> int:
        """Fails every unfinished task whose owner's lock is gone; drops expired ids from the
        index. Returns how many tasks it failed."""
        failed = 0
        ids = [_str(i) for i in await self._redis.zrange(self._index_key, 0, -1)]
        for task_id in ids:
            task = await self._read(task_id)
            if task is None:
                await self._redis.zrem(self._index_key, task_id)
            elif not task.state.terminal and task_id not in self._workers:
                failed += await self._reap(task.id, task.runtime, task.model, ABANDONED_REASON)
        return failed

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.lock_ttl_s)
            try:
                await self.sweep()
            except RedisError as exc:  # keep sweeping: Redis may come back
                log.warning("pull.sweep_failed", error=type(exc).__name__)

    async def open(self) -> None:
        """Starts the sweeper, so a dead replica's pulls end FAILED even when nobody looks."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    # ---- reading -----------------------------------------------------------------------------

    async def _read(self, task_id: str) -> PullTask | None:
        raw = await self._redis.hgetall(self._task_key(task_id))
        return PullTask.from_hash(raw) if raw else None

    async def get(self, task_id: str) -> PullTask:
        with _store_errors():
            task = await self._read(task_id)
            if task is None:
                raise TaskNotFound(f"pull task {task_id} not found")
            return await self._reap_if_orphaned(task)

    async def all(self) -> list[PullTask]:
        with _store_errors():
            return await self._all()

    async def _all(self) -> list[PullTask]:
        ids = [
            _str(i)
            for i in await self._redis.zrevrange(self._index_key, 0, self._config.max_listed - 1)
        ]
        tasks = []
        for task_id in ids:
            task = await self._read(task_id)
            if task is None:  # finished long ago: its keys expired
                await self._redis.zrem(self._index_key, task_id)
                continue
            tasks.append(await self._reap_if_orphaned(task))
        return tasks

    async def wait_started(self, task: PullTask, timeout_s: float) -> PullTask:
        """The task once bytes flow or it ended, or as it is after ``timeout_s`` (so an unknown
        model fails the request itself)."""
        latest = task
        with _store_errors(), contextlib.suppress(TimeoutError):
            async with (
                asyncio.timeout(timeout_s),
                contextlib.aclosing(self._follow_tasks(task.id)) as snapshots,
            ):
                async for snapshot in snapshots:
                    latest = snapshot
                    if latest.total > 0 or latest.state.terminal:
                        break
        return latest

    async def follow(self, task_id: str) -> AsyncIterator[dict[str, Any]]:
        """The task's snapshot now and after every change, until it is terminal, whichever
        replica runs it."""
        with _store_errors():
            async for task in self._follow_tasks(task_id):
                yield task.snapshot()

    async def _follow_tasks(self, task_id: str) -> AsyncGenerator[PullTask, None]:
        events = self._events_key(task_id)
        block_ms = int(self._config.follow_block_s * 1000)
        # The stream position first, then the hash: a change after the read is still seen.
        last = await self._redis.xrevrange(events, count=1)
        cursor = _str(last[0][0]) if last else "0-0"
        task = await self.get(task_id)
        yield task
        seen = task.version
        while not task.state.terminal:
            entries: Any = await self._redis.xread(
                {events: cursor}, count=_STREAM_MAXLEN, block=block_ms
            )
            if entries:
                cursor = _str(entries[0][1][-1][0])
            # Silence for a whole block: check the owner still holds its lock (it may have died).
            found = await self._read(task_id)
            if found is None:
                raise TaskNotFound(f"pull task {task_id} not found")
            task = found if entries else await self._reap_if_orphaned(found)
            if task.version != seen:
                seen = task.version
                yield task

    async def aclose(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        await _cancel_until_done(list(self._workers.values()))


async def _cancel_until_done(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel, and cancel again until they end: redis-py 8 swallows a cancellation that lands
    while a command is in flight, which would leave a pull waiting on its runtime forever."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    await asyncio.gather(*tasks, return_exceptions=True)


def unknown_model_failure(task: PullTask) -> UnknownModel | None:
    """The error to answer a pull request with when the runtime did not know the model."""
    if task.state == PullState.FAILED and task.error_type == UnknownModel.type_slug:
        return UnknownModel(task.error or UnknownModel.title)
    return None
