"""The supervisor with stand-in children: tiny Python programs, not the real services."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import redis

from kubemate_cli.embedded.processes import ProcessChild, free_port, pick_port
from kubemate_cli.embedded.redis import RedisNotAvailable, RedisServer, redact_url
from kubemate_cli.embedded.supervisor import (
    ChildExited,
    ChildStartError,
    EmbeddedStack,
    ProcessSpec,
    ShutdownRequested,
    StackConfig,
    StackError,
    Supervisor,
    stack_environment,
)

# A stand-in service: notes "start"/"stop" in an events file, answers GET /healthz with 200.
CHILD = textwrap.dedent(
    """
    import http.server, os, signal, subprocess, sys, time

    name, port, events, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

    def note(*what):
        with open(events, "a") as f:
            f.write(" ".join([*what, name]) + "\\n")

    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        def on_term(signum, frame):
            note("stop")
            os._exit(0)
        signal.signal(signal.SIGTERM, on_term)

    if mode == "die":
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        note("grandchild", str(grandchild.pid))
        print("loading model ...", flush=True)
        print("boom: the model file is missing", flush=True)
        time.sleep(0.3)
        sys.exit(3)

    if mode == "env":
        with open(events + ".env." + name, "w") as f:
            for key in sorted(os.environ):
                if key.startswith(("KUBEMATE_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")):
                    f.write(key + "=" + os.environ[key] + "\\n")

    note("start")
    if port == 0:  # a worker: no HTTP
        while True:
            time.sleep(1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/healthz" and mode != "unhealthy"
            self.send_response(200 if ok else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


@pytest.fixture
def child_script(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture
def events(tmp_path: Path) -> Path:
    return tmp_path / "events.txt"


def read_events(events: Path) -> list[str]:
    return events.read_text().splitlines() if events.exists() else []


def note(events: Path, line: str) -> None:
    with events.open("a") as f:
        f.write(line + "\n")


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie counts as dead (init may be slow to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def spec(
    child_script: Path, events: Path, name: str, mode: str = "ok", http: bool = True
) -> ProcessSpec:
    port = free_port() if http else 0
    return ProcessSpec(
        name=name,
        argv=[sys.executable, str(child_script), name, str(port), str(events), mode],
        health_url=f"http://127.0.0.1:{port}/healthz" if http else None,
        min_alive_s=0.3,
    )


class FakeService:
    """A backend with start/stop that notes both in the events file."""

    def __init__(self, name: str, events: Path) -> None:
        self.name = name
        self.events = events
        self.url = f"redis://fake-{name}"
        self.uri = f"http://fake-{name}"
        self.running = False

    def _note(self, what: str) -> None:
        with self.events.open("a") as f:
            f.write(f"{what} {self.name}\n")

    def start(self) -> None:
        self.running = True
        self._note("start")

    def stop(self) -> None:
        if self.running:
            self.running = False
            self._note("stop")

    def poll(self) -> int | None:
        return None


def test_starts_in_order_and_stops_in_reverse(
    tmp_path: Path, child_script: Path, events: Path
) -> None:
    sup = Supervisor(tmp_path / "logs", grace_s=5)
    try:
        sup.start_service("redis", FakeService("redis", events))
        sup.run_step("migrations", lambda: note(events, "start migrations"))
        sup.start_processes([spec(child_script, events, "ingest")], timeout_s=30)
        sup.start_processes([spec(child_script, events, "gateway")], timeout_s=30)
        sup.start_processes([spec(child_script, events, "worker", http=False)], timeout_s=30)
        assert sup.names == ["redis", "ingest", "gateway", "worker"]
        # A child without a health endpoint counts as started once spawned; wait until it has
        # really run, or a loaded machine stops it before it could note its start.
        deadline = time.monotonic() + 30
        while "start worker" not in read_events(events) and time.monotonic() < deadline:
            time.sleep(0.05)
        sup.check()
    finally:
        sup.stop()
    assert read_events(events) == [
        "start redis",
        "start migrations",
        "start ingest",
        "start gateway",
        "start worker",
        "stop worker",
        "stop gateway",
        "stop ingest",
        "stop redis",
    ]
    assert sup.names == []
    assert (tmp_path / "logs" / "ingest.log").read_text().startswith("=== ")


def test_child_dying_during_start_fails_fast_with_log_tail_and_leaves_no_orphans(
    tmp_path: Path, child_script: Path, events: Path
) -> None:
    sup = Supervisor(tmp_path / "logs", grace_s=5)
    good = spec(child_script, events, "retrieval")
    bad = spec(child_script, events, "ingest", mode="die")
    started = time.monotonic()
    try:
        with pytest.raises(ChildStartError) as info:
            sup.start_processes([good, bad], timeout_s=60)
        pids = dict(sup.pids())
    finally:
        sup.stop()
    assert time.monotonic() - started < 15, "waited for the timeout instead of failing fast"
    err = info.value
    assert err.name == "ingest"
    assert "exited with code 3" in err.detail
    assert "boom: the model file is missing" in err.log_tail
    assert err.log_path == tmp_path / "logs" / "ingest.log"

    grandchild = int(next(e.split()[1] for e in read_events(events) if e.startswith("grandchild")))
    assert wait_until(lambda: not alive(grandchild)), "the dead child's own child survived"
    assert all(not alive(pid) for pid in pids.values())


def test_child_that_never_becomes_healthy_times_out_with_its_log(
    tmp_path: Path, child_script: Path, events: Path
) -> None:
    sup = Supervisor(tmp_path / "logs", grace_s=5)
    try:
        with pytest.raises(ChildStartError, match=r"ingest was not healthy after 1 s"):
            sup.start_processes([spec(child_script, events, "ingest", "unhealthy")], timeout_s=1)
        pid = sup.pids()["ingest"]
    finally:
        sup.stop()
    assert not alive(pid)


def test_sigterm_ignoring_child_is_killed_after_the_grace_period(
    tmp_path: Path, child_script: Path, events: Path
) -> None:
    sup = Supervisor(tmp_path / "logs", grace_s=0.5)
    sup.start_processes([spec(child_script, events, "stubborn", "ignore-term")], timeout_s=30)
    pid = sup.pids()["stubborn"]
    started = time.monotonic()
    sup.stop()
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5
    assert not alive(pid)
    assert "stop stubborn" not in read_events(events)


def test_process_child_reports_sigkill_as_negative_code(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(15, 1); print('ready', flush=True); time.sleep(60)"
    child = ProcessChild.spawn("sleeper", [sys.executable, "-c", code], tmp_path / "sleeper.log")
    assert wait_until(lambda: "ready" in child.log_tail())
    assert child.exit_code() is None
    assert child.stop(grace_s=0.2) == -signal.SIGKILL


def test_watch_reports_a_child_that_dies_while_running(
    tmp_path: Path, child_script: Path, events: Path
) -> None:
    sup = Supervisor(tmp_path / "logs", grace_s=5)
    try:
        sup.start_processes(
            [spec(child_script, events, "retrieval"), spec(child_script, events, "ingest")],
            timeout_s=30,
        )
        os.kill(sup.pids()["ingest"], signal.SIGKILL)
        with pytest.raises(ChildExited) as info:
            sup.watch(timeout_s=10)
        assert info.value.name == "ingest"
        assert info.value.returncode == -signal.SIGKILL
        retrieval = sup.pids()["retrieval"]
    finally:
        sup.stop()
    assert not alive(retrieval)


def test_signal_during_start_stops_what_was_started(
    tmp_path: Path, child_script: Path, events: Path
) -> None:
    sup = Supervisor(tmp_path / "logs", grace_s=5)
    # Never healthy, so the supervisor is still waiting when SIGTERM arrives.
    waiting = spec(child_script, events, "ingest", "unhealthy")
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    with sup.handle_signals():
        try:
            timer.start()
            with pytest.raises(ShutdownRequested):
                sup.start_processes([waiting], timeout_s=30)
            pid = sup.pids()["ingest"]
        finally:
            timer.cancel()
            sup.stop()
    assert not alive(pid)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_second_signal_breaks_out_of_a_start_that_hangs(tmp_path: Path, events: Path) -> None:
    class Hanging(FakeService):
        def start(self) -> None:
            super().start()
            time.sleep(30)

    sup = Supervisor(tmp_path / "logs")
    service = Hanging("milvus", events)
    timers = [threading.Timer(t, os.kill, (os.getpid(), signal.SIGINT)) for t in (0.3, 0.6)]
    started = time.monotonic()
    with sup.handle_signals():
        try:
            for timer in timers:
                timer.start()
            with pytest.raises(ShutdownRequested):
                sup.start_service("milvus", service)
        finally:
            for timer in timers:
                timer.cancel()
            sup.stop()
    assert time.monotonic() - started < 5
    assert read_events(events) == ["start milvus", "stop milvus"]


def test_killed_supervisor_takes_its_children_with_it(tmp_path: Path) -> None:
    # SIGKILL gives the supervisor no chance to stop anything: the kernel must (PDEATHSIG).
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from kubemate_cli.embedded.supervisor import ProcessSpec, Supervisor
        sup = Supervisor(Path({str(tmp_path / "logs")!r}))
        argv = [sys.executable, "-c", "import time; time.sleep(600)"]
        sup.start_processes([ProcessSpec("sleeper", argv, min_alive_s=0.1)])
        print("PID", sup.pids()["sleeper"], flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        line = ""
        while not line.startswith("PID "):
            line = parent.stdout.readline()
            assert line, "the supervisor process ended early"
        child_pid = int(line.split()[1])
        assert alive(child_pid)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    assert wait_until(lambda: not alive(child_pid)), "child outlived its killed supervisor"


# ---- ports and environment ---------------------------------------------------------------------


def test_pick_port_prefers_the_default_and_avoids_busy_and_taken_ports() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        busy_port = busy.getsockname()[1]
        taken: set[int] = set()
        other = pick_port("127.0.0.1", busy_port, taken)
        assert other != busy_port
    free = free_port()
    assert pick_port("127.0.0.1", free, taken) == free
    assert pick_port("127.0.0.1", free, taken) != free  # already handed out
    assert free in taken and other in taken


def test_stack_environment_wires_the_stack_and_passes_user_settings_through(
    tmp_path: Path,
) -> None:
    urls = {n: f"http://127.0.0.1:{p}" for n, p in [("ingest", 1), ("retrieval", 2)]}
    urls["model_manager"] = "http://127.0.0.1:3"
    base = {
        "PATH": "/bin",
        "KUBEMATE_LLM__PROVIDER": "ollama",
        "KUBEMATE_REDIS__URL": "redis://elsewhere:6379/0",
        "KUBEMATE_DATABASE__URL": "postgresql+psycopg://u@db/k",
        "HF_HUB_OFFLINE": "0",
    }
    env = stack_environment(
        base, data_dir=tmp_path, redis_url="redis://127.0.0.1:7/0", milvus_uri="http://m:1",
        service_urls=urls,
    )  # fmt: skip
    assert env["PATH"] == "/bin"
    assert env["KUBEMATE_LLM__PROVIDER"] == "ollama"
    assert env["KUBEMATE_DATABASE__URL"] == "postgresql+psycopg://u@db/k"
    assert env["KUBEMATE_REDIS__URL"] == "redis://127.0.0.1:7/0"  # what this stack started
    assert env["KUBEMATE_MILVUS__URI"] == "http://m:1"
    assert env["KUBEMATE_GATEWAY__MODEL_MANAGER_URL"] == "http://127.0.0.1:3"
    assert env["HF_HUB_OFFLINE"] == "1"
    env = stack_environment({}, data_dir=tmp_path, redis_url="r", milvus_uri="m", service_urls=urls)
    assert env["KUBEMATE_DATABASE__URL"] == f"sqlite:///{tmp_path}/kubemate.db"
    assert env["KUBEMATE_OBJECT_STORE__PROVIDER"] == "filesystem"
    assert env["KUBEMATE_OBJECT_STORE__ROOT"] == str(tmp_path / "objects")
    assert env["KUBEMATE_DATA_DIR"] == str(tmp_path)


# ---- the embedded stack with stand-ins ---------------------------------------------------------


class StandInStack(EmbeddedStack):
    def __init__(self, child_script: Path, events: Path, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.child_script = child_script
        self.events = events

    def service_argv(self, name: str, host: str, port: int) -> list[str]:
        return [self.python, str(self.child_script), name, str(port), str(self.events), "env"]

    def worker_argv(self) -> list[str]:
        return [self.python, str(self.child_script), "worker", "0", str(self.events), "ok"]


def test_embedded_stack_starts_everything_in_order_with_its_wiring(
    tmp_path: Path, child_script: Path, events: Path
) -> None:
    migrated: list[str] = []

    def migrate(url: str) -> None:
        migrated.append(url)
        note(events, "start migrations")

    stack = StandInStack(
        child_script,
        events,
        config=StackConfig(data_dir=tmp_path / "data", preferred_ports={}, grace_s=5),
        base_env={"PATH": os.environ["PATH"], "KUBEMATE_LLM__PROVIDER": "ollama"},
        redis_factory=lambda data_dir, url: FakeService("redis", events),
        milvus_factory=lambda data_dir, host, port: FakeService("milvus", events),
        migrate=migrate,
    )
    try:
        info = stack.start()
        # A worker has no health check: start() returns once it is spawned. On a loaded machine
        # its interpreter may not have reached its SIGTERM handler (nor noted "start") yet, and
        # a stop then would kill it silently; wait for it to be up before stopping.
        assert wait_until(lambda: "start worker" in read_events(events), timeout=60)
        stack.supervisor.check()
    finally:
        stack.stop()

    data_dir = (tmp_path / "data").resolve()
    assert migrated == [f"sqlite:///{data_dir}/kubemate.db"]
    got = read_events(events)
    starts = [e.split()[1] for e in got if e.startswith("start")]
    stops = [e.split()[1] for e in got if e.startswith("stop")]
    assert starts[:3] == ["redis", "milvus", "migrations"]
    assert sorted(starts[3:6]) == ["ingest", "model_manager", "retrieval"]
    assert starts[6:] == ["gateway", "worker"]
    assert stops == ["worker", "gateway", "model_manager", "retrieval", "ingest", "milvus", "redis"]

    assert info.url == f"http://127.0.0.1:{info.ports['gateway']}"
    assert set(info.pids) == {"ingest", "retrieval", "model_manager", "gateway", "worker"}
    assert len(set(info.ports.values())) == 5
    env = dict(
        line.split("=", 1) for line in Path(f"{events}.env.gateway").read_text().splitlines()
    )
    assert env["KUBEMATE_REDIS__URL"] == "redis://fake-redis"
    assert env["KUBEMATE_MILVUS__URI"] == "http://fake-milvus"
    assert env["KUBEMATE_GATEWAY__INGEST_URL"] == f"http://127.0.0.1:{info.ports['ingest']}"
    assert env["KUBEMATE_LLM__PROVIDER"] == "ollama"
    assert env["KUBEMATE_DATA_DIR"] == str(data_dir)


def test_embedded_stack_runs_retrieval_replicas_that_the_gateway_takes_in_turn(
    tmp_path: Path, child_script: Path, events: Path
) -> None:
    stack = StandInStack(
        child_script,
        events,
        config=StackConfig(
            data_dir=tmp_path / "data", preferred_ports={}, grace_s=5, retrieval_replicas=3
        ),
        base_env={"PATH": os.environ["PATH"]},
        redis_factory=lambda data_dir, url: FakeService("redis", events),
        milvus_factory=lambda data_dir, host, port: FakeService("milvus", events),
        migrate=lambda url: None,
    )
    try:
        info = stack.start()
        stack.supervisor.check()
    finally:
        stack.stop()

    names = ["retrieval", "retrieval-2", "retrieval-3"]
    assert set(names) <= set(info.pids) and len({info.pids[n] for n in names}) == 3
    ports = [info.ports[n] for n in names]
    assert len(set(ports)) == 3
    env = dict(
        line.split("=", 1) for line in Path(f"{events}.env.gateway").read_text().splitlines()
    )
    assert env["KUBEMATE_GATEWAY__RETRIEVAL_URL"] == ",".join(
        f"http://127.0.0.1:{port}" for port in ports
    )
    # Each replica is a retrieval service on its own port (the stand-in records its name).
    starts = [e.split()[1] for e in read_events(events) if e.startswith("start")]
    assert sorted(n for n in starts if n.startswith("retrieval")) == names


def test_embedded_stack_refuses_a_busy_explicit_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        stack = EmbeddedStack(StackConfig(data_dir=tmp_path, port=busy.getsockname()[1]))
        with pytest.raises(StackError, match="is in use"):
            stack.start()
        stack.stop()


# ---- Redis -------------------------------------------------------------------------------------


def test_private_redis_keeps_queued_work_across_restarts(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        assert server.embedded and server.pid is not None
        redis.Redis.from_url(server.url).xadd("kubemate:ingest", {"document_id": "d1"})
        pid = server.pid
    assert not alive(pid)
    assert (tmp_path / "redis").is_dir()
    with RedisServer(tmp_path) as server:
        assert redis.Redis.from_url(server.url).xlen("kubemate:ingest") == 1


def test_given_redis_url_must_answer_ping(tmp_path: Path) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    server = RedisServer(tmp_path, url)
    with pytest.raises(RedisNotAvailable, match="did not answer PING") as info:
        server.start()
    assert "hunter2" not in str(info.value)
    assert server.url == url and not server.embedded
    server.stop()


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://u:secret@h:1/2") == "redis://u:***@h:1/2"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
