"""Pull tasks: one background task per model being pulled, with progress to follow.

Two requests to pull the same model on the same runtime while a pull runs share its task. Tasks
live in this process (the model manager runs as one replica) and finished ones are forgotten
after ``keep_finished_s``. Every pull ends COMPLETED or FAILED with the reason; a connection lost
half-way fails the task with the transport's error, and the runtime keeps no partial model.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from kubemate.errors import KubemateError, TaskNotFound
from kubemate.logs import get_logger
from kubemate.models.base import ModelRuntime

log = get_logger(__name__)


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


@dataclass
class PullTask:
    id: str
    model: str
    runtime: str
    requested_by: str
    state: PullState = PullState.PENDING
    status: str = "queued"
    completed: int = 0
    total: int = 0
    error: str | None = None
    error_type: str | None = None
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)
    finished_at: datetime | None = None
    version: int = 0
    failure: KubemateError | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

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
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class PullTasks:
    def __init__(
        self,
        *,
        keep_finished_s: float = 3600.0,
        on_finished: Callable[[PullTask], None] | None = None,
    ) -> None:
        self._tasks: dict[str, PullTask] = {}
        self._active: dict[tuple[str, str], str] = {}  # (runtime, model) -> running task id
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._keep_finished_s = keep_finished_s
        self._on_finished = on_finished

    def start(self, runtime: ModelRuntime, name: str, requested_by: str) -> tuple[PullTask, bool]:
        """The running pull of this model on this runtime, or a new one; True when new."""
        self._forget_old()
        model = runtime.canonical(name)
        key = (runtime.id, model)
        running = self._active.get(key)
        if running is not None:
            return self._tasks[running], False
        task = PullTask(
            id=uuid.uuid4().hex, model=model, runtime=runtime.id, requested_by=requested_by[:200]
        )
        self._tasks[task.id] = task
        self._active[key] = task.id
        self._workers[task.id] = asyncio.create_task(self._run(task, runtime, key))
        log.info("pull.started", task_id=task.id, model=model, runtime=runtime.id)
        return task, True

    async def _update(self, task: PullTask, **changes: Any) -> None:
        async with task.changed:
            for name, value in changes.items():
                setattr(task, name, value)
            task.updated_at = _now()
            task.version += 1
            task.changed.notify_all()

    async def _run(self, task: PullTask, runtime: ModelRuntime, key: tuple[str, str]) -> None:
        try:
            await self._update(task, state=PullState.PULLING, status="starting")
            async for progress in runtime.pull(task.model):
                await self._update(
                    task,
                    status=progress.status,
                    completed=progress.completed,
                    total=max(progress.total, task.total),
                )
            await self._update(
                task, state=PullState.COMPLETED, status="success", finished_at=_now()
            )
            log.info("pull.completed", task_id=task.id, model=task.model, runtime=task.runtime)
        except asyncio.CancelledError:
            await self._update(
                task,
                state=PullState.FAILED,
                error="the model manager stopped during the pull",
                error_type="cancelled",
                finished_at=_now(),
            )
            raise
        except KubemateError as exc:
            await self._fail(task, exc.detail, exc.type_slug, exc)
        except Exception as exc:  # the task must end FAILED whatever went wrong
            log.error("pull.crashed", task_id=task.id, exc_info=exc)
            await self._fail(task, f"internal error: {type(exc).__name__}", "internal-error", None)
        finally:
            self._active.pop(key, None)
            self._workers.pop(task.id, None)
            if self._on_finished is not None:
                self._on_finished(task)

    async def _fail(
        self, task: PullTask, reason: str, slug: str, exc: KubemateError | None
    ) -> None:
        await self._update(
            task,
            state=PullState.FAILED,
            error=reason,
            error_type=slug,
            failure=exc,
            finished_at=_now(),
        )
        log.warning("pull.failed", task_id=task.id, model=task.model, error=reason)

    def get(self, task_id: str) -> PullTask:
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskNotFound(f"pull task {task_id} not found")
        return task

    def all(self) -> list[PullTask]:
        self._forget_old()
        return sorted(self._tasks.values(), key=lambda t: t.created_at, reverse=True)

    async def wait_started(self, task: PullTask, timeout_s: float) -> None:
        """Until bytes flow or the task ended (so an unknown model fails the request itself)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), task.changed:
                await task.changed.wait_for(lambda: task.total > 0 or task.state.terminal)

    async def follow(self, task_id: str) -> AsyncIterator[dict[str, Any]]:
        """The task's snapshot now and after every change, until it is terminal."""
        task = self.get(task_id)
        seen = [-1]  # a cell the predicate reads, so it always sees the latest version sent
        while True:
            async with task.changed:
                await task.changed.wait_for(lambda: task.version != seen[0])
                seen[0] = task.version
                snapshot = task.snapshot()
            yield snapshot
            if task.state.terminal:
                return

    def _forget_old(self) -> None:
        now = _now()
        for task_id, task in list(self._tasks.items()):
            if (
                task.finished_at is not None
                and (now - task.finished_at).total_seconds() > self._keep_finished_s
            ):
                del self._tasks[task_id]

    async def aclose(self) -> None:
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
