"""A small process supervisor, and the embedded stack it runs.

:class:`Supervisor` starts children in order, each in its own process group with its output in
``<log_dir>/<name>.log``, waits until each answers ``/healthz``, watches them while they run, and
stops them in reverse order (SIGTERM, then SIGKILL after a grace period). Start is all or nothing:
a child that dies or never becomes healthy fails the start with the tail of its log, and whatever
was already running is stopped again, so nothing is left behind.

:class:`EmbeddedStack` is the one-machine Kubemate: Redis -> Milvus Lite -> database migrations ->
ingest, retrieval, model_manager -> gateway -> worker.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, runtime_checkable

import httpx

from kubemate.errors import ServiceError
from kubemate.logs import get_logger
from kubemate_cli.embedded.processes import (
    LOOPBACK,
    ProcessChild,
    http_url,
    pick_port,
    port_is_free,
    read_log_tail,
)

log = get_logger(__name__)


# ---- errors ------------------------------------------------------------------------------------


class StackError(ServiceError):
    """The stack could not start, or a part of it stopped while it ran."""

    type_slug = "stack-error"
    title = "Embedded stack failed"

    def __init__(
        self, detail: str, *, name: str = "", log_tail: str = "", log_path: Path | None = None
    ) -> None:
        super().__init__(detail)
        self.name = name
        self.log_tail = log_tail
        self.log_path = log_path


class ChildStartError(StackError):
    title = "A component failed to start"


class ChildExited(StackError):
    title = "A component stopped unexpectedly"

    def __init__(
        self, name: str, returncode: int | None, log_tail: str = "", log_path: Path | None = None
    ) -> None:
        how = "stopped" if returncode is None else f"exited with code {returncode}"
        super().__init__(f"{name} {how}", name=name, log_tail=log_tail, log_path=log_path)
        self.returncode = returncode


class ShutdownRequested(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---- the supervisor ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    health_url: str | None = None  # GET must answer 200; None: alive for min_alive_s suffices
    cwd: Path | None = None
    min_alive_s: float = 1.0


@runtime_checkable
class ManagedService(Protocol):
    """A backend that manages its own process (Redis, Milvus Lite)."""

    def start(self) -> Any: ...

    def stop(self) -> Any: ...


@dataclass
class _Entry:
    name: str
    child: ProcessChild | None = None
    service: Any = None
    log_path: Path | None = None

    def exit_code(self) -> int | None:
        if self.child is not None:
            return self.child.exit_code()
        poll = getattr(self.service, "poll", None)
        return poll() if callable(poll) else None

    def log_tail(self) -> str:
        if self.child is not None:
            return self.child.log_tail()
        return read_log_tail(self.log_path) if self.log_path else ""


class Supervisor:
    """Starts children in order, watches them, stops them in reverse order.

    Use :meth:`handle_signals` around start and watch, and call :meth:`stop` in a ``finally``:
    a SIGINT/SIGTERM then ends a start (between steps, or while waiting for health) or a watch
    with :class:`ShutdownRequested`, and everything started so far is stopped.
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        grace_s: float = 10.0,
        poll_interval_s: float = 0.1,
        health_timeout_s: float = 2.0,
    ) -> None:
        self.log_dir = log_dir
        self.grace_s = grace_s
        self.poll_interval_s = poll_interval_s
        self._entries: list[_Entry] = []
        # Health checks go to our own children on loopback: never through a proxy from the env.
        self._http = httpx.Client(timeout=health_timeout_s, trust_env=False)
        self._stopping = False
        self._hurry = False
        self._shutdown_signal: int | None = None
        self._interruptible = False

    # -- signals --

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags: an exception raised at an arbitrary point (say between spawning a child
        # and recording it) could leave an orphan. The supervisor's loops check the flag.
        if self._shutdown_signal is None:
            self._shutdown_signal = signum
            return
        # Asked again: skip the remaining grace periods, and if a start step is stuck in a
        # blocking call (a backend that never comes up), break out of it. Only there: anywhere
        # else the exception could land in the caller's cleanup and skip stop().
        self._hurry = True
        if self._interruptible and not self._stopping:
            raise ShutdownRequested(signum)

    @contextlib.contextmanager
    def _interruptible_call(self) -> Iterator[None]:
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    @contextlib.contextmanager
    def handle_signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM request a shutdown: :class:`ShutdownRequested` comes out of the
        current start or watch at the next check."""
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def request_shutdown(self, signum: int = signal.SIGTERM) -> None:
        if self._shutdown_signal is None:
            self._shutdown_signal = signum

    def checkpoint(self) -> None:
        """Raise :class:`ShutdownRequested` if a shutdown was requested."""
        if self._shutdown_signal is not None and not self._stopping:
            raise ShutdownRequested(self._shutdown_signal)

    # -- start --

    @property
    def names(self) -> list[str]:
        return [e.name for e in self._entries]

    def pids(self) -> dict[str, int]:
        return {e.name: e.child.pid for e in self._entries if e.child is not None}

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start_service(
        self, name: str, service: ManagedService, log_path: Path | None = None
    ) -> None:
        """Start a backend that runs its own process; ``service.start()`` returns when ready."""
        self.checkpoint()
        entry = _Entry(name=name, service=service, log_path=log_path)
        # Recorded before start so that a failure or a signal half-way through still stops it.
        self._entries.append(entry)
        started = time.monotonic()
        try:
            with self._interruptible_call():
                service.start()
        except Exception as exc:
            raise ChildStartError(
                f"{name} failed to start: {exc}",
                name=name,
                log_tail=entry.log_tail(),
                log_path=log_path,
            ) from exc
        log.info("child.ready", name=name, seconds=round(time.monotonic() - started, 2))
        self.checkpoint()

    def run_step(self, name: str, step: Callable[[], object]) -> None:
        """Run a one-off step in this process (database migrations)."""
        self.checkpoint()
        started = time.monotonic()
        try:
            with self._interruptible_call():
                step()
        except Exception as exc:
            raise ChildStartError(f"{name} failed: {exc}", name=name) from exc
        log.info("step.done", name=name, seconds=round(time.monotonic() - started, 2))
        self.checkpoint()

    def start_processes(self, specs: Sequence[ProcessSpec], timeout_s: float = 300.0) -> None:
        """Spawn ``specs`` together, then wait until each is healthy; fail fast if one dies."""
        started = time.monotonic()
        waiting: list[tuple[_Entry, ProcessSpec]] = []
        self.checkpoint()
        for spec in specs:
            child = ProcessChild.spawn(
                spec.name, spec.argv, self.log_path(spec.name), env=spec.env, cwd=spec.cwd
            )
            entry = _Entry(name=spec.name, child=child, log_path=child.log_path)
            self._entries.append(entry)
            log.info("child.started", name=spec.name, pid=child.pid)
            waiting.append((entry, spec))

        deadline = started + timeout_s
        while waiting:
            self.checkpoint()
            for entry, spec in list(waiting):
                code = entry.exit_code()
                if code is not None:
                    raise ChildStartError(
                        f"{spec.name} exited with code {code} during start",
                        name=spec.name,
                        log_tail=entry.log_tail(),
                        log_path=entry.log_path,
                    )
                if self._is_ready(spec, started):
                    waiting.remove((entry, spec))
                    log.info(
                        "child.ready", name=spec.name, seconds=round(time.monotonic() - started, 2)
                    )
            if waiting and time.monotonic() > deadline:
                entry, spec = waiting[0]
                raise ChildStartError(
                    f"{spec.name} was not healthy after {timeout_s:g} s",
                    name=spec.name,
                    log_tail=entry.log_tail(),
                    log_path=entry.log_path,
                )
            if waiting:
                time.sleep(self.poll_interval_s)

    def _is_ready(self, spec: ProcessSpec, started: float) -> bool:
        if spec.health_url is None:
            return time.monotonic() - started >= spec.min_alive_s
        try:
            return self._http.get(spec.health_url).status_code == 200
        except httpx.HTTPError:
            return False

    # -- run --

    def watch(self, timeout_s: float | None = None) -> None:
        """Block while every child runs; raise :class:`ChildExited` as soon as one stops.

        Returns after ``timeout_s`` if given (tests); otherwise only a signal ends it.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while deadline is None or time.monotonic() < deadline:
            self.checkpoint()
            self.check()
            time.sleep(self.poll_interval_s)

    def check(self) -> None:
        for entry in self._entries:
            code = entry.exit_code()
            if code is not None:
                raise ChildExited(entry.name, code, entry.log_tail(), entry.log_path)

    # -- stop --

    def stop(self) -> None:
        """Stop everything started so far, last started first. Safe to call more than once."""
        self._stopping = True
        try:
            while self._entries:
                entry = self._entries.pop()
                self._stop_entry(entry)
        finally:
            self._http.close()

    def _stop_entry(self, entry: _Entry) -> None:
        started = time.monotonic()
        try:
            if entry.child is not None:
                code: object = entry.child.stop(self.grace_s, hurry=lambda: self._hurry)
            else:
                entry.service.stop()
                code = None
        except Exception as exc:
            # Keep going: one failing stop must not leave the remaining children running.
            log.error("child.stop_failed", name=entry.name, error=str(exc))
            return
        log.info(
            "child.stopped",
            name=entry.name,
            returncode=code,
            seconds=round(time.monotonic() - started, 2),
        )


# ---- the embedded stack ------------------------------------------------------------------------

HTTP_SERVICES: dict[str, str] = {
    "ingest": "kubemate_ingest.main:create_app",
    "retrieval": "kubemate_retrieval.main:create_app",
    "model_manager": "kubemate_model_manager.main:create_app",
    "gateway": "kubemate_gateway.main:create_app",
}
DEFAULT_PORTS: dict[str, int] = {
    "gateway": 8000,
    "ingest": 8001,
    "retrieval": 8002,
    "model_manager": 8003,
    "milvus": 19530,
}
DEFAULT_WORKER_METRICS_PORT = 9101


@dataclass
class StackConfig:
    data_dir: Path
    host: str = LOOPBACK  # the gateway's; the other services listen on loopback only
    port: int | None = None  # the gateway's; None: 8000 when free, else any free port
    redis_url: str | None = None  # use this Redis instead of starting one
    preferred_ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    start_timeout_s: float = 300.0  # the first start loads models
    grace_s: float = 10.0
    workers: int = 1  # worker processes, each a consumer of the ingest stream
    # Retrieval processes (``retrieval``, ``retrieval-2`` ...), which the gateway takes in turn:
    # what a Deployment's replicas behind a Service are in a cluster.
    retrieval_replicas: int = 1

    def retrieval_names(self) -> list[str]:
        return ["retrieval", *(f"retrieval-{i}" for i in range(2, self.retrieval_replicas + 1))]


@dataclass(frozen=True)
class StackInfo:
    url: str
    data_dir: Path
    log_dir: Path
    redis_url: str
    milvus_uri: str
    ports: dict[str, int]
    pids: dict[str, int]
    # Each worker's Prometheus endpoint (it has no HTTP API), by process name; Prometheus
    # scrapes the HTTP services' /metrics on their `ports`.
    metrics_ports: dict[str, int] = field(default_factory=dict)


def stack_environment(
    base: Mapping[str, str],
    *,
    data_dir: Path,
    redis_url: str,
    milvus_uri: str,
    service_urls: Mapping[str, str],
) -> dict[str, str]:
    """The environment of every child: the parent's, plus the stack's wiring.

    The wiring (Redis, Milvus, the services' URLs) always wins: it names what this stack
    started. Storage locations are defaults a user's KUBEMATE_* variables may override (a
    PostgreSQL URL, an S3 object store), and the rest of their KUBEMATE_* settings pass through.
    """
    env = dict(base)
    env.setdefault("KUBEMATE_DATABASE__URL", f"sqlite:///{data_dir / 'kubemate.db'}")
    env.setdefault("KUBEMATE_OBJECT_STORE__PROVIDER", "filesystem")
    env.setdefault("KUBEMATE_OBJECT_STORE__ROOT", str(data_dir / "objects"))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(
        {
            "KUBEMATE_DATA_DIR": str(data_dir),
            "KUBEMATE_REDIS__URL": redis_url,
            "KUBEMATE_MILVUS__URI": milvus_uri,
            "KUBEMATE_GATEWAY__INGEST_URL": service_urls["ingest"],
            # One URL, or the replicas' separated by commas (the gateway takes them in turn).
            "KUBEMATE_GATEWAY__RETRIEVAL_URL": service_urls["retrieval"],
            "KUBEMATE_GATEWAY__MODEL_MANAGER_URL": service_urls["model_manager"],
            # Models come from installed packages; nothing may be downloaded at run time.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # Log lines reach the log file as they happen, so a failing start shows its cause.
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class EmbeddedStack:
    """Redis -> Milvus Lite -> migrations -> ingest, retrieval, model_manager -> gateway -> worker
    (``config.workers`` of them: ``worker``, or ``worker-1`` ... ``worker-N``).

    The backends are injectable for tests; by default the real ones are imported on start.
    """

    def __init__(
        self,
        config: StackConfig,
        *,
        base_env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        redis_factory: Callable[[Path, str | None], Any] | None = None,
        milvus_factory: Callable[[Path, str, int], Any] | None = None,
        migrate: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.data_dir = config.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self.python = python
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._redis_factory = redis_factory
        self._milvus_factory = milvus_factory
        self._migrate = migrate
        self.supervisor = Supervisor(self.log_dir, grace_s=config.grace_s)

    # Overridable in tests, which run stand-in children instead of the real services.
    def service_argv(self, name: str, host: str, port: int) -> list[str]:
        return [
            self.python,
            "-m",
            "uvicorn",
            "--factory",
            HTTP_SERVICES[name.split("-")[0]],  # retrieval-2 is another retrieval
            "--host",
            host,
            "--port",
            str(port),
            # A plain-text line per request, without request id or tenant, at a cost on every
            # request; the services' metrics count requests by route and status instead.
            "--no-access-log",
        ]

    def worker_argv(self) -> list[str]:
        return [self.python, "-m", "kubemate_worker"]

    def _ports(self) -> dict[str, int]:
        cfg = self.config
        taken: set[int] = set()
        ports: dict[str, int] = {}
        if cfg.port is not None:
            if not port_is_free(cfg.host, cfg.port):
                raise StackError(f"port {cfg.port} on {cfg.host} is in use: pick another --port")
            taken.add(cfg.port)
            ports["gateway"] = cfg.port
        else:
            ports["gateway"] = pick_port(cfg.host, cfg.preferred_ports.get("gateway"), taken)
        for name in ("ingest", "retrieval", "model_manager", "milvus"):
            ports[name] = pick_port(LOOPBACK, cfg.preferred_ports.get(name), taken)
        for name in cfg.retrieval_names()[1:]:
            ports[name] = pick_port(LOOPBACK, None, taken)
        return ports

    def start(self) -> StackInfo:
        """Start everything in order; on any failure raise with whatever started still running
        (call :meth:`stop` in a ``finally``)."""
        cfg = self.config
        sup = self.supervisor
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ports = self._ports()

        redis = self._make_redis()
        sup.start_service("redis", redis, log_path=getattr(redis, "log_path", None))
        redis_url: str = redis.url

        milvus = self._make_milvus(ports["milvus"])
        sup.start_service("milvus", milvus, log_path=getattr(milvus, "log_path", None))
        milvus_uri: str = milvus.uri

        if cfg.retrieval_replicas < 1:
            raise StackError("the stack needs at least one retrieval process")
        service_urls = {
            name: http_url(LOOPBACK, ports[name]) for name in ("ingest", "model_manager")
        }
        service_urls["retrieval"] = ",".join(
            http_url(LOOPBACK, ports[name]) for name in cfg.retrieval_names()
        )
        env = stack_environment(
            self._base_env,
            data_dir=self.data_dir,
            redis_url=redis_url,
            milvus_uri=milvus_uri,
            service_urls=service_urls,
        )
        database_url = env["KUBEMATE_DATABASE__URL"]
        migrate = self._migrate or _default_migrate
        sup.run_step("migrations", lambda: migrate(database_url))

        def spec(name: str, host: str) -> ProcessSpec:
            return ProcessSpec(
                name=name,
                argv=self.service_argv(name, host, ports[name]),
                env=env,
                health_url=http_url(host, ports[name]) + "/healthz",
            )

        timeout = cfg.start_timeout_s
        sup.start_processes(
            [spec(n, LOOPBACK) for n in ("ingest", *cfg.retrieval_names(), "model_manager")],
            timeout,
        )
        sup.start_processes([spec("gateway", cfg.host)], timeout)
        metrics_ports: dict[str, int] = {}
        workers = self._worker_specs(env, taken=set(ports.values()), metrics_ports=metrics_ports)
        sup.start_processes(workers, timeout)

        return StackInfo(
            url=http_url(cfg.host, ports["gateway"]),
            data_dir=self.data_dir,
            log_dir=self.log_dir,
            redis_url=redis_url,
            milvus_uri=milvus_uri,
            ports=ports,
            pids=sup.pids(),
            metrics_ports=metrics_ports,
        )

    def _worker_specs(
        self, env: Mapping[str, str], taken: set[int], metrics_ports: dict[str, int]
    ) -> list[ProcessSpec]:
        count = self.config.workers
        if count < 1:
            raise StackError("the stack needs at least one worker")
        specs = []
        metrics = env.get("KUBEMATE_WORKER__METRICS_PORT", str(DEFAULT_WORKER_METRICS_PORT))
        for i in range(count):
            worker_env = dict(env)
            name = "worker" if count == 1 else f"worker-{i + 1}"
            if metrics != "0":  # 0: no metrics endpoint; otherwise each needs a port of its own
                preferred = int(metrics) + i if metrics.isdigit() else None
                port = pick_port(LOOPBACK, preferred, taken)
                worker_env["KUBEMATE_WORKER__METRICS_PORT"] = str(port)
                metrics_ports[name] = port
            # The metrics port too is picked free: 9101 may belong to another stack on the host.
            specs.append(ProcessSpec(name, self.worker_argv(), env=worker_env))
        return specs

    def _make_redis(self) -> Any:
        if self._redis_factory is not None:
            return self._redis_factory(self.data_dir, self.config.redis_url)
        from kubemate_cli.embedded.redis import RedisServer

        return RedisServer(
            self.data_dir, self.config.redis_url, log_path=self.log_dir / "redis.log"
        )

    def _make_milvus(self, port: int) -> Any:
        if self._milvus_factory is not None:
            return self._milvus_factory(self.data_dir / "milvus", LOOPBACK, port)
        # Imported here: milvus-lite belongs to the optional `embedded` extra.
        from kubemate_cli.embedded.milvus import MilvusLiteServer

        return MilvusLiteServer(self.data_dir / "milvus", host=LOOPBACK, port=port)

    def watch(self) -> None:
        self.supervisor.watch()

    def stop(self) -> None:
        self.supervisor.stop()


def _default_migrate(database_url: str) -> None:
    from kubemate.metadata.migrate import upgrade_to_head

    upgrade_to_head(database_url)
