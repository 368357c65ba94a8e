"""`kubemate up`: the whole embedded stack with one command, until Ctrl-C."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from kubemate.logs import configure_logging
from kubemate.settings import ObservabilityConfig
from kubemate_cli.common import STACK_FILE, CliFailure, clean_errors, read_stack_file, settings
from kubemate_cli.embedded.supervisor import (
    EmbeddedStack,
    ShutdownRequested,
    StackConfig,
    StackError,
    StackInfo,
)


def up(
    data_dir: Annotated[
        Path,
        typer.Option(
            "--data-dir",
            envvar="KUBEMATE_DATA_DIR",
            help="Data, logs and state of the stack.",
        ),
    ] = Path(".kubemate"),
    host: Annotated[
        str, typer.Option("--host", help="Interface the gateway listens on.")
    ] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Gateway port. Default: 8000, or a free port if 8000 is taken.",
            show_default=False,
        ),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar="REDIS_URL",
            help="Use this Redis instead of starting a private redis-server.",
            show_default=False,
        ),
    ] = None,
    start_timeout: Annotated[
        float,
        typer.Option(
            "--start-timeout", min=1, help="Seconds each service may take to become healthy."
        ),
    ] = 300.0,
    grace: Annotated[
        float,
        typer.Option("--grace", min=0, help="Seconds a service may take to stop before SIGKILL."),
    ] = 10.0,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", min=1, max=16, help="Worker processes indexing uploads side by side."
        ),
    ] = 1,
    retrieval_replicas: Annotated[
        int,
        typer.Option(
            "--retrieval-replicas",
            min=1,
            max=8,
            help="Retrieval processes answering queries, taken in turn by the gateway.",
        ),
    ] = 1,
) -> None:
    """Start Redis, Milvus Lite and the five services; stop them all on Ctrl-C."""
    console = Console()
    data_dir = data_dir.resolve()
    with clean_errors():
        cfg = settings()
        _refuse_second_stack(data_dir)
    # Human-readable lines on the terminal; the services' own JSON logs go to their log files.
    configure_logging(
        ObservabilityConfig(log_level=cfg.observability.log_level, log_json=False), service="up"
    )
    # Health polls and Alembic's plugin setup would drown the few lines that matter.
    for noisy in ("httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stack = EmbeddedStack(
        StackConfig(
            data_dir=data_dir,
            host=host,
            port=port,
            redis_url=redis_url,
            start_timeout_s=start_timeout,
            grace_s=grace,
            workers=workers,
            retrieval_replicas=retrieval_replicas,
        )
    )
    failure: StackError | None = None
    stack_file = data_dir / STACK_FILE
    with stack.supervisor.handle_signals():
        try:
            console.print(f"Starting Kubemate in [bold]{escape(str(data_dir))}[/] ...")
            info = stack.start()
            _write_stack_file(stack_file, info)
            console.print(_ready_panel(info))
            stack.watch()
        except ShutdownRequested:
            console.print("Stopping Kubemate ...")
        except StackError as exc:
            failure = exc
            console.print(f"[red]{escape(exc.detail)}[/]: stopping Kubemate ...")
        finally:
            stack.stop()
            _remove_stack_file(stack_file)
    if failure is not None:
        # Last, so that it is what the terminal shows when everything has stopped.
        console.print(_failure_panel(failure))
        raise typer.Exit(1)
    console.print("Kubemate stopped.")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse_second_stack(data_dir: Path) -> None:
    # Two stacks on one data dir would fight over Milvus Lite's lock and Redis's files.
    existing = read_stack_file(data_dir)
    pid = existing.get("pid") if existing else None
    if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
        raise CliFailure(
            f"Kubemate is already running from {data_dir}",
            f"pid {pid}, {existing.get('url') if existing else ''}: stop it first, or pass "
            "another --data-dir.",
        )


def _write_stack_file(path: Path, info: StackInfo) -> None:
    data = {
        "url": info.url,
        "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "log_dir": str(info.log_dir),
        "redis_url": info.redis_url,
        "milvus_uri": info.milvus_uri,
        "ports": info.ports,
        "metrics_ports": info.metrics_ports,  # the workers' Prometheus endpoints
        # Lets a test harness clean up children if this process is ever killed outright.
        "pids": info.pids,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)  # readers never see half a file


def _remove_stack_file(path: Path) -> None:
    existing = read_stack_file(path.parent)
    if existing is not None and existing.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _ready_panel(info: StackInfo) -> Panel:
    body = Text.assemble(
        ("Gateway   ", "bold"),
        (info.url, "cyan"),
        "\n",
        ("Logs      ", "bold"),
        str(info.log_dir),
        "\n\nNext, in another terminal:\n",
        ("  kubemate ingest FILE_OR_DIR\n", "green"),
        ('  kubemate ask "What do my documents say about X?"\n', "green"),
        "\nCtrl-C stops everything.",
    )
    return Panel(body, title="Kubemate is up", title_align="left", border_style="green")


def _failure_panel(exc: StackError) -> Panel:
    parts: list[Text] = [Text(exc.detail, style="bold")]
    if exc.log_path is not None and exc.log_path.exists():
        parts.append(Text(f"log: {exc.log_path}", style="dim"))
    if exc.log_tail:
        parts.append(Text("\n" + exc.log_tail))
    return Panel(Group(*parts), title=exc.title, title_align="left", border_style="red")
