"""A small synchronous client of the gateway's HTTP API, as the CLI needs it.

The transport is injectable (``httpx.MockTransport`` in tests). Errors come out as two kinds:
:class:`ApiError` (the API answered with an error, usually RFC 9457 problem+json) and
:class:`GatewayUnreachable` (nothing answered). A 429 is retried (:func:`send`) as the gateway's
``Retry-After`` says, a bounded number of times, before it becomes an :class:`ApiError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import httpx
from httpx_sse import SSEError, connect_sse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kubemate.retry import RetryPolicy, retry_sync

TERMINAL_STATES = frozenset({"COMPLETED", "FAILED"})


# ---- response models ---------------------------------------------------------------------------


class _Model(BaseModel):
    # The API may grow fields; the CLI reads the ones it knows.
    model_config = ConfigDict(extra="ignore")


class Upload(_Model):
    document_id: str
    task_id: str
    state: str
    duplicate: bool = False


class Progress(_Model):
    done: int = 0
    total: int = 0


class TaskStatus(_Model):
    task_id: str
    document_id: str | None = None
    state: str
    stage: str | None = None
    progress: Progress = Field(default_factory=Progress)
    error: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class Citation(_Model):
    index: int
    document_id: str | None = None
    chunk_id: str | None = None
    source: str | None = None
    snippet: str = ""
    score: float | None = None
    page: int | None = None


class ChatAnswer(_Model):
    answer: str
    citations: list[Citation] = Field(default_factory=list)
    model: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    answer_mode: str | None = None  # extractive (quoted) or generative
    cannot_answer: bool = False
    unsupported_sentences: list[str] = Field(default_factory=list)


# ---- errors ------------------------------------------------------------------------------------


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status: int, title: str, detail: str = "", type_uri: str = "") -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type_uri = type_uri

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        if isinstance(body, dict) and ("title" in body or "detail" in body):
            detail = body.get("detail")
            return cls(
                status=response.status_code,
                title=str(body.get("title") or response.reason_phrase),
                # FastAPI's own errors carry a list of field errors here.
                detail=detail if isinstance(detail, str) else "" if detail is None else str(detail),
                type_uri=str(body.get("type", "")),
            )
        # Not problem+json (a proxy's error page, say): keep it short, never dump HTML.
        text = " ".join(response.text.split())[:200]
        return cls(
            response.status_code, f"HTTP {response.status_code} {response.reason_phrase}", text
        )


class EventsUnavailable(Exception):
    """The server does not stream this task's events (an older server, or a proxy in the way)."""


class GatewayUnreachable(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


# ---- 429: wait as told, a few times --------------------------------------------------------------


class Throttled(Exception):
    """A 429 answer. ``retry_after`` (seconds) is what :mod:`kubemate.retry` waits before the
    next attempt; without a Retry-After it backs off with jitter."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__("rate limited")
        self.response = response
        self.retry_after = parse_retry_after(response.headers.get("Retry-After"))


# Four tries over at most about three minutes: long enough for a token bucket to refill, short
# enough that a person at the terminal is not left guessing.
RATE_LIMIT_RETRY = RetryPolicy(
    max_attempts=4, base_delay=1.0, max_delay=60.0, retry_on=(Throttled,)
)

Notify = Callable[[str], None]


def parse_retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or (lambda: datetime.now(UTC)))()).total_seconds())


def send(
    http: httpx.Client,
    method: str,
    path: str,
    *,
    policy: RetryPolicy = RATE_LIMIT_RETRY,
    sleep: Callable[[float], None] = time.sleep,
    notify: Notify | None = None,
    body: Callable[[], dict[str, Any]] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One API call; a 429 is tried again after the wait the answer asks for, at most
    ``policy.max_attempts`` tries in all (the project's retry helper does the waiting).

    ``body`` builds the request body for each try (a file reopened, a generator made anew),
    since a streamed body cannot be sent twice. Gives up with an :class:`ApiError` (429) that
    says so: after the last try, or at once when the wait asked for exceeds ``policy.max_delay``.
    """
    base_url = str(http.base_url).rstrip("/")
    # Only a 429 is tried again here, whatever else the policy names: other errors are the
    # caller's to judge (a 503 during an upload may have stored the file).
    policy = dataclasses.replace(policy, retry_on=(Throttled,))
    tries = 0

    def attempt() -> httpx.Response:
        nonlocal tries
        tries += 1
        try:
            response = http.request(method, path, **kwargs, **(body() if body else {}))
        except httpx.TransportError as exc:
            raise GatewayUnreachable(base_url, str(exc) or type(exc).__name__) from None
        if response.status_code != 429:
            return response
        throttled = Throttled(response)
        if throttled.retry_after is not None and throttled.retry_after > policy.max_delay:
            raise _gave_up(
                throttled,
                f"Gave up at once: the gateway asks to wait {throttled.retry_after:.0f} s, "
                f"longer than this command waits ({policy.max_delay:.0f} s). Try again later",
            )
        raise throttled

    def wait(seconds: float) -> None:
        if notify is not None:
            notify(
                f"Rate limited by Kubemate; trying again in {seconds:.1f} s "
                f"(attempt {tries + 1} of {policy.max_attempts})"
            )
        sleep(seconds)

    try:
        return retry_sync(attempt, policy=policy, operation=f"{method} {path}", sleep=wait)
    except Throttled as exc:
        asked = (
            f" The gateway asks to wait {exc.retry_after:.0f} s;"
            if exc.retry_after is not None
            else ""
        )
        raise _gave_up(exc, f"Gave up after {tries} attempts.{asked} try again later") from None


def _gave_up(throttled: Throttled, why: str) -> ApiError:
    server = ApiError.from_response(throttled.response)
    detail = f"{why}, or ask an admin about the tenant's rate limits."
    if server.detail:
        detail = f"{server.detail}\n{detail}"
    return ApiError(429, "Rate limited", detail, server.type_uri)


# ---- the client --------------------------------------------------------------------------------


class KubemateClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout_s: float = 30.0,
        chat_timeout_s: float = 300.0,
        retry: RetryPolicy = RATE_LIMIT_RETRY,
        sleep: Callable[[float], None] = time.sleep,
        notify: Notify | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.chat_timeout_s = chat_timeout_s
        self.retry = retry
        self._sleep = sleep
        self._notify = notify
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout_s,
            transport=transport,
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = send(
            self._http,
            method,
            path,
            policy=self.retry,
            sleep=self._sleep,
            notify=self._notify,
            **kwargs,
        )
        if response.is_error:
            raise ApiError.from_response(response)
        return response.json()

    def upload(self, path: Path, collection: str = "default") -> Upload:
        with contextlib.ExitStack() as files:

            def form() -> dict[str, Any]:
                # Opened per try: a retried upload sends the file from its first byte again.
                f = files.enter_context(path.open("rb"))
                return {"files": {"file": (path.name, f)}}

            body = self._request(
                "POST",
                "/v1/documents",
                body=form,
                data={"collection": collection},
                timeout=max(self._http.timeout.read or 0, 120.0),
            )
        return Upload.model_validate(body)

    def task(self, task_id: str) -> TaskStatus:
        return TaskStatus.model_validate(self._request("GET", f"/v1/tasks/{task_id}"))

    def task_events(self, task_id: str, read_timeout_s: float = 60.0) -> Iterator[TaskStatus]:
        """The task's states from ``/v1/tasks/{id}/events`` (Server-Sent Events) until the
        server ends the stream, normally right after the terminal state.

        Raises :class:`ApiError` for an error answer (an unknown task: 404, or an ``error`` event
        when the task is deleted meanwhile), :class:`EventsUnavailable` when the answer is not an
        event stream, :class:`GatewayUnreachable` when the connection fails. ``read_timeout_s``
        must exceed the server's ping interval."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout_s)
        try:
            with connect_sse(
                self._http, "GET", f"/v1/tasks/{task_id}/events", timeout=timeout
            ) as source:
                response = source.response
                if response.is_error:
                    response.read()
                    raise ApiError.from_response(response)
                try:
                    for event in source.iter_sse():
                        if event.event == "task":
                            yield TaskStatus.model_validate_json(event.data)
                        elif event.event == "error":
                            raise _event_error(event.data)
                except (SSEError, ValidationError) as exc:
                    raise EventsUnavailable(str(exc)) from None
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, str(exc) or type(exc).__name__) from None

    def chat(self, question: str, collection: str = "default", top_k: int = 5) -> ChatAnswer:
        body = self._request(
            "POST",
            "/v1/chat",
            json={"question": question, "collection": collection, "top_k": top_k},
            # Generation on a CPU can take a while.
            timeout=self.chat_timeout_s,
        )
        return ChatAnswer.model_validate(body)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _event_error(data: str) -> ApiError:
    body: Any = None
    with contextlib.suppress(ValueError):
        body = json.loads(data)
    if not isinstance(body, dict):
        return ApiError(500, "Task events failed", data[:200])
    return ApiError(
        status=int(body.get("status") or 500),
        title=str(body.get("title") or "Task events failed"),
        detail=str(body.get("detail") or ""),
        type_uri=str(body.get("type") or ""),
    )


# ---- following tasks ---------------------------------------------------------------------------


class TaskWatcher(Protocol):
    """Yields task updates until every task is terminal or ``timeout_s`` has passed.

    :class:`SseWatcher` follows the server's event streams, :class:`PollingWatcher` asks again
    and again; the CLI only consumes the updates, whichever produced them.
    """

    def watch(
        self, client: KubemateClient, task_ids: Sequence[str], timeout_s: float
    ) -> Iterator[TaskStatus]: ...


class PollingWatcher:
    def __init__(
        self,
        interval_s: float = 0.5,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._sleep = sleep
        self._clock = clock

    def watch(
        self, client: KubemateClient, task_ids: Sequence[str], timeout_s: float
    ) -> Iterator[TaskStatus]:
        deadline = self._clock() + timeout_s
        pending = list(task_ids)
        while pending:
            for task_id in list(pending):
                try:
                    status = client.task(task_id)
                except ApiError as exc:
                    if exc.status >= 500:
                        continue  # a backend hiccup: ask again next round
                    # The task is gone or not ours: nothing more will come for it.
                    status = TaskStatus(
                        task_id=task_id, state="FAILED", error=f"{exc.title}: {exc.detail}"
                    )
                if status.terminal:
                    pending.remove(task_id)
                yield status
            if not pending or self._clock() >= deadline:
                return
            self._sleep(self.interval_s)


def _gone(task_id: str, exc: ApiError) -> TaskStatus:
    """What a task that is not there (deleted, or not the caller's) looks like to a watcher."""
    return TaskStatus(task_id=task_id, state="FAILED", error=f"{exc.title}: {exc.detail}")


class SseWatcher:
    """Follows each task over its event stream (``GET /v1/tasks/{id}/events``), at most
    ``max_streams`` at once, in daemon threads so a timed-out stream never holds up the exit.

    A stream that ends before the task is terminal (a proxy's idle timeout, the server's stream
    limit) is opened again; a task whose stream is unavailable (an older server, a proxy that
    does not pass event streams, repeated failures) is followed by the ``fallback`` watcher
    (polling) instead."""

    def __init__(
        self,
        fallback: TaskWatcher | None = None,
        *,
        max_streams: int = 8,
        max_failures: int = 3,
        retry_delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fallback: TaskWatcher = fallback or PollingWatcher()
        self.max_streams = max_streams
        self.max_failures = max_failures
        self.retry_delay_s = retry_delay_s
        self._clock = clock

    def watch(
        self, client: KubemateClient, task_ids: Sequence[str], timeout_s: float
    ) -> Iterator[TaskStatus]:
        deadline = self._clock() + timeout_s
        updates: queue.Queue[TaskStatus | str] = queue.Queue()  # a str: that task's follower ended
        stop = threading.Event()
        slots = threading.Semaphore(self.max_streams)

        def follow(task_id: str) -> None:
            with slots:
                try:
                    self._follow(client, task_id, deadline, stop, updates.put)
                except Exception as exc:  # never lose the end of a follower
                    updates.put(TaskStatus(task_id=task_id, state="FAILED", error=str(exc)))
                finally:
                    updates.put(task_id)

        for task_id in dict.fromkeys(task_ids):
            threading.Thread(target=follow, args=(task_id,), daemon=True).start()
        following = set(task_ids)
        try:
            while following:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return
                try:
                    item = updates.get(timeout=remaining)
                except queue.Empty:
                    return
                if isinstance(item, str):
                    following.discard(item)
                else:
                    yield item
        finally:
            stop.set()

    def _follow(
        self,
        client: KubemateClient,
        task_id: str,
        deadline: float,
        stop: threading.Event,
        emit: Callable[[TaskStatus], None],
    ) -> None:
        failures = 0
        while not stop.is_set() and self._clock() < deadline:
            try:
                for status in client.task_events(task_id):
                    failures = 0
                    emit(status)
                    if status.terminal or stop.is_set():
                        return
            except ApiError as exc:
                if exc.status in (401, 403) or exc.type_uri.endswith("/task-not-found"):
                    emit(_gone(task_id, exc))
                    return
                if exc.status < 500:  # no such route here: an older server
                    break
                failures += 1
            except EventsUnavailable:
                break
            except GatewayUnreachable:
                failures += 1
            else:
                failures += 1  # the stream ended before the task did: open it again
            if failures >= self.max_failures:
                break
            stop.wait(self.retry_delay_s)
        remaining = deadline - self._clock()
        if stop.is_set() or remaining <= 0:
            return
        for status in self.fallback.watch(client, [task_id], remaining):
            emit(status)
            if stop.is_set():
                return
