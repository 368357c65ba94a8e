"""Milvus processes of our own: Milvus Lite's gRPC server, and a Milvus 2.3.5 standalone.

:class:`MilvusLiteServer` is the embedded stack's vector store (``kubemate up``): many processes
share one ``milvus-lite server`` over gRPC, since Milvus Lite lets only one process open a data
directory. :class:`MilvusStandaloneServer` runs the real Milvus 2.3.5 binary shipped in PyPI's
``milvus`` package, so the integration tests cover a real server too.

Both run as :class:`~kubemate_cli.embedded.supervisor.ProcessChild`: own process group, output in a
log file, and killed by the kernel if this process dies without stopping them.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import re
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

from kubemate.errors import BackendUnavailable
from kubemate.logs import get_logger
from kubemate_cli.embedded.processes import (
    LOOPBACK,
    ProcessChild,
    free_port,
    http_url,
    port_is_free,
)

log = get_logger(__name__)

_POLL_S = 0.1
_TAIL_LINES = 30


class MilvusNotAvailable(BackendUnavailable):
    type_slug = "milvus-unavailable"
    title = "Milvus is unavailable"


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _dial_host(host: str) -> str:
    return LOOPBACK if host in ("0.0.0.0", "", "::") else host  # recognising, not binding


class _StartAborted(MilvusNotAvailable):
    """The server died of a signal while starting. Milvus Lite's gRPC event engine aborts now and
    then as it starts ("Epoll1Poller ... epoll_wait error: Bad file descriptor", SIGABRT), more
    often on busy cores; the same command started again comes up."""


def _died(name: str, child: ProcessChild, code: int) -> MilvusNotAvailable:
    tail = child.log_tail(_TAIL_LINES).strip() or "(no output)"
    kind = _StartAborted if code < 0 else MilvusNotAvailable
    return kind(
        f"{name} exited with code {code} during start; last output (from {child.log_path}):\n{tail}"
    )


def _stop_child(name: str, child: ProcessChild, grace_s: float) -> int:
    code = child.stop(grace_s)
    log.info("milvus.server_stopped", server=name, returncode=code)
    return code


# ---- Milvus Lite --------------------------------------------------------------------------------

# `milvus-lite server` shuts down cleanly (drains requests, flushes and closes the data directory)
# only on KeyboardInterrupt; SIGTERM would end it on the spot, and a SIGINT that our parent
# ignores (a background job) stays ignored in the child. So both signals raise KeyboardInterrupt.
#
# gRPC's Python server allows a client ping only every 5 minutes when no data flows, and answers
# more with GOAWAY "too many pings"; pymilvus pings every 10 s. Milvus itself (Go) permits pings
# every 5 s, so the server is given that same policy.
#
# BM25 is weighed over the whole collection, as Milvus does, not per segment
# (:mod:`kubemate_cli.embedded.lite_bm25`).
_LITE_MAIN = (
    "import signal, sys, grpc; "
    "from kubemate_cli.embedded.lite_bm25 import install; install(); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "signal.signal(signal.SIGTERM, signal.default_int_handler); "
    "_server = grpc.server; "
    "grpc.server = lambda *a, options=(), **k: _server(*a, options=[*options, "
    "('grpc.http2.min_ping_interval_without_data_ms', 5000), "
    "('grpc.http2.max_ping_strikes', 0), "
    "('grpc.keepalive_permit_without_calls', 1)], **k); "
    "from milvus_lite.cmdline import main; "
    "sys.argv[0] = 'milvus-lite'; "
    "sys.exit(main())"
)


class MilvusLiteServer:
    """``milvus-lite server`` on ``host:port`` over ``data_dir``; ``start()`` returns once it
    accepts connections, ``uri`` is what :class:`~kubemate.settings.MilvusConfig` wants.

    Its output goes to ``log_path`` (default: ``<data_dir>/../logs/milvus-lite.log``, the
    embedded stack's log directory), kept out of ``data_dir``, which belongs to Milvus Lite.
    """

    name = "milvus-lite"

    def __init__(
        self,
        data_dir: Path,
        host: str = LOOPBACK,
        port: int = 19530,
        *,
        log_path: Path | None = None,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 10.0,
        start_attempts: int = 3,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.log_path = log_path or self.data_dir.parent / "logs" / "milvus-lite.log"
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.start_attempts = start_attempts  # a start that dies of a signal is tried again
        self._child: ProcessChild | None = None

    @property
    def uri(self) -> str:
        return http_url(self.host, self.port)

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    def poll(self) -> int | None:
        """The exit code once the started server has exited; None while it runs."""
        return self._child.exit_code() if self._child else None

    def argv(self) -> list[str]:
        # The interpreter running us, so the server uses this environment's milvus-lite.
        return [
            sys.executable,
            "-c",
            _LITE_MAIN,
            "server",
            "--data-dir",
            str(self.data_dir),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]

    def start(self) -> None:
        if self._child is not None:
            return
        if importlib.util.find_spec("milvus_lite") is None:
            raise MilvusNotAvailable(
                "milvus-lite is not installed: pip install 'kubemate-libs[milvus-lite]' (part of "
                "the `embedded` extra), or point KUBEMATE_MILVUS__URI at a server"
            )
        # Otherwise a server already on the port would pass our readiness check for us.
        if not port_is_free(self.host, self.port):
            raise MilvusNotAvailable(f"port {self.port} on {self.host} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for attempt in range(1, self.start_attempts + 1):
            self._child = child = ProcessChild.spawn(self.name, self.argv(), self.log_path, env=env)
            try:
                self._wait_ready()
            except _StartAborted as exc:
                self.stop()
                if attempt == self.start_attempts:
                    raise
                log.warning(
                    "milvus.start_aborted", server=self.name, attempt=attempt, error=str(exc)
                )
                continue
            except BaseException:
                self.stop()
                raise
            log.info("milvus.server_started", server=self.name, uri=self.uri, pid=child.pid)
            return

    def _wait_ready(self) -> None:
        assert self._child is not None
        deadline = time.monotonic() + self.start_timeout_s
        dial = _dial_host(self.host)
        while True:
            code = self._child.exit_code()
            if code is not None:
                raise _died(self.name, self._child, code)
            if _accepts_connections(dial, self.port):
                return
            if time.monotonic() > deadline:
                raise MilvusNotAvailable(
                    f"{self.name} did not accept connections on {self.uri} within "
                    f"{self.start_timeout_s:g} s (see {self.log_path})"
                )
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """SIGTERM (graceful: see ``_LITE_MAIN``), then SIGKILL after ``stop_timeout_s``."""
        child, self._child = self._child, None
        if child is not None:
            _stop_child(self.name, child, grace_s=self.stop_timeout_s)

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


# ---- Milvus 2.3.5 standalone --------------------------------------------------------------------

_IP_LINE = re.compile(r"^(\s*)ip:.*$", re.MULTILINE)
_TIME_TICK_LINE = re.compile(r"^(\s*)timeTickInterval: \d+(.*)$", re.MULTILINE)


def _milvus_package() -> Any:
    try:
        import milvus
    except ImportError as exc:
        raise MilvusNotAvailable(
            "the Milvus standalone server needs PyPI's milvus package (pip install milvus==2.3.5)"
        ) from exc
    return milvus


def loopback_template(milvus: Any) -> str:
    """The ``milvus`` package's config template with every component on 127.0.0.1.

    With ``ip:`` empty Milvus advertises the first non-loopback address (eth0) to its own
    components and then dials it, which fails on machines that filter it."""
    template = Path(milvus.__file__).parent / "data" / "config.yaml.template"
    text, count = _IP_LINE.subn(rf"\g<1>ip: {LOOPBACK}", template.read_text(encoding="utf-8"))
    if count == 0:
        raise MilvusNotAvailable(f"no `ip:` settings found in {template}: unknown milvus package")
    return text


class MilvusStandaloneServer:
    """The Milvus 2.3.5 standalone binary from PyPI's ``milvus`` package, for tests.

    ``base_dir`` holds its config, data, logs and (unless ``bin_cache`` is given) the ~250 MB of
    binaries the package unpacks on first start, which takes seconds; a shared ``bin_cache``
    directory unpacks them once for every server. The other ports Milvus needs (its components',
    embedded etcd's) are probed free, so several servers can run on one machine.

    ``time_tick_ms`` overrides the proxy's time tick (200 ms): a Strong-consistency read waits
    for the next tick, so tests that read after every write run several times faster at 50.

    ``stop()`` sends SIGTERM, then SIGKILL after ``stop_timeout_s``: once collections have been
    loaded, Milvus 2.3 hangs in its shutdown. A killed server leaves its sessions in etcd, so a
    restart on the same ``base_dir`` waits about a minute for them to expire; tests use a fresh
    directory each time.
    """

    name = "milvus-standalone"

    def __init__(
        self,
        base_dir: Path,
        port: int = 19530,
        *,
        bin_cache: Path | None = None,
        time_tick_ms: int | None = None,
        start_timeout_s: float = 180.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.base_dir = base_dir.resolve()
        self.port = port
        self.bin_cache = bin_cache.resolve() if bin_cache else None
        self.time_tick_ms = time_tick_ms
        self.log_path = self.base_dir / "logs" / "milvus.log"
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.metrics_port: int | None = None
        self._etcd_config = self.base_dir / "configs" / "embed-etcd.yaml"
        self._child: ProcessChild | None = None

    @property
    def uri(self) -> str:
        return http_url(LOOPBACK, self.port)

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    def poll(self) -> int | None:
        return self._child.exit_code() if self._child else None

    def _binaries(self, milvus: Any) -> Path:
        root = self.bin_cache or self.base_dir
        root.mkdir(parents=True, exist_ok=True)
        # A private helper of the pinned package: it unpacks the binaries, skipping files whose
        # checksum is unchanged. The lock keeps concurrent first starts from reading a half-
        # written binary in a shared cache.
        with (root / ".unpack.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                milvus._initialize_data_files(str(root))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return root / "bin"

    def _write_config(self, milvus: Any) -> None:
        template = self.base_dir / "milvus.yaml.template"
        text = loopback_template(milvus)
        if self.time_tick_ms is not None:
            text = _TIME_TICK_LINE.sub(rf"\g<1>timeTickInterval: {self.time_tick_ms}\2", text)
        template.write_text(text, encoding="utf-8")
        config = milvus.MilvusServerConfig(template=str(template), data_dir=str(self.base_dir))
        # The package sets this only when it uses its own template.
        config.glog_conf_file = str(Path(milvus.__file__).parent / "data" / "glog.conf")
        # Every port is one of ours. The package's own probing, from each default upwards, leaks
        # a socket per busy port (a ResourceWarning) and takes ports near 19530 that a Milvus
        # Lite of `kubemate up` may want. Embedded etcd listens on its defaults (2379, 2380)
        # whatever milvus.yaml says, so it gets free ports through its own config file.
        keys = [k for k in config.configurable_items if k.endswith("_port") and k != "proxy_port"]
        free = _free_ports(len(keys) + 2, taken={self.port})
        self.metrics_port, peer_port = free.pop(), free.pop()
        config.update(proxy_port=self.port, **dict(zip(keys, free, strict=True)))
        # Writes <base_dir>/configs/milvus.yaml, which the binary reads from its working directory.
        config.resolve()
        client_url = http_url(LOOPBACK, int(config.get("etcd_port")))
        peer_url = http_url(LOOPBACK, peer_port)
        self._etcd_config.write_text(
            "name: default\n"
            f"listen-client-urls: {client_url}\n"
            f"advertise-client-urls: {client_url}\n"
            f"listen-peer-urls: {peer_url}\n"
            f"initial-advertise-peer-urls: {peer_url}\n"
            f"initial-cluster: default={peer_url}\n",
            encoding="utf-8",
        )

    def start(self) -> None:
        if self._child is not None:
            return
        milvus = _milvus_package()
        if not port_is_free(LOOPBACK, self.port):
            raise MilvusNotAvailable(f"port {self.port} is already in use")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        bin_dir = self._binaries(milvus)
        self._write_config(milvus)
        env = dict(os.environ)
        env.update(
            {
                "DEPLOY_MODE": "STANDALONE",
                "METRICS_PORT": str(self.metrics_port),
                "MILVUS_RUN_DIR": str(self.base_dir / "run"),
                "ETCD_CONFIG_PATH": str(self._etcd_config),
                "LD_LIBRARY_PATH": os.pathsep.join(
                    p for p in (str(bin_dir), os.environ.get("LD_LIBRARY_PATH", "")) if p
                ),
            }
        )
        argv = [str(bin_dir / "milvus"), "run", "standalone"]
        self._child = ProcessChild.spawn(self.name, argv, self.log_path, env=env, cwd=self.base_dir)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info(
            "milvus.server_started",
            server=self.name,
            uri=self.uri,
            pid=self._child.pid,
            seconds=round(time.monotonic() - started, 2),
        )

    def _wait_ready(self) -> None:
        assert self._child is not None
        deadline = time.monotonic() + self.start_timeout_s
        health = http_url(LOOPBACK, self.metrics_port or 0) + "/healthz"
        with httpx.Client(timeout=1.0, trust_env=False) as http:
            while True:
                code = self._child.exit_code()
                if code is not None:
                    raise _died(self.name, self._child, code)
                if _healthy(http, health) and _accepts_connections(LOOPBACK, self.port):
                    return
                if time.monotonic() > deadline:
                    raise MilvusNotAvailable(
                        f"{self.name} was not healthy within {self.start_timeout_s:g} s "
                        f"(see {self.log_path} and {self.base_dir / 'logs'})"
                    )
                time.sleep(_POLL_S)

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            _stop_child(self.name, child, grace_s=self.stop_timeout_s)

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


def _free_ports(count: int, taken: set[int]) -> list[int]:
    """``count`` distinct free ports, none of them in ``taken``."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(LOOPBACK)
        if port not in taken and port not in ports:
            ports.append(port)
    return ports


def _healthy(http: httpx.Client, url: str) -> bool:
    try:
        response = http.get(url)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and "OK" in response.text
