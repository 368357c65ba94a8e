"""What the client commands share: where the gateway is, which token, how errors print."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
import structlog
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from kubemate.auth import Role, issue_token
from kubemate.retry import RetryPolicy
from kubemate.settings import KubemateSettings
from kubemate_cli.client import (
    RATE_LIMIT_RETRY,
    ApiError,
    GatewayUnreachable,
    KubemateClient,
    SseWatcher,
    TaskWatcher,
)

DEFAULT_URL = "http://127.0.0.1:8000"
STACK_FILE = "stack.json"
DEFAULT_TENANT = "default"


@dataclass
class CliState:
    """Handed to commands through Typer's context object; tests inject a mock transport."""

    transport: httpx.BaseTransport | None = None
    # Event streams, with polling for servers or proxies that do not pass them.
    watcher: TaskWatcher = field(default_factory=SseWatcher)
    # How a 429 is waited out (tests pass a sleep that records instead of waiting).
    retry: RetryPolicy = RATE_LIMIT_RETRY
    sleep: Callable[[float], None] = time.sleep


def notice(message: str) -> None:
    """A line for the person at the terminal, on stderr: stdout stays the command's output."""
    err_console().print(f"[yellow]{escape(message)}[/]")


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    # sys.stderr looked up at each log call, not once: whoever replaced it (a test runner, a
    # pager) may have closed the stream it had before.
    return structlog.PrintLogger(file=sys.stderr)


def quiet_logs() -> None:
    """The client commands print messages, not logs: the libraries' log lines (the retry
    helper's warnings among them) go to stderr, errors only, so stdout stays clean."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def state(ctx: typer.Context) -> CliState:
    return ctx.obj if isinstance(ctx.obj, CliState) else CliState()


def err_console() -> Console:
    return Console(stderr=True)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class CliFailure(Exception):
    """A failure to print as a message (never a traceback), then exit non-zero."""

    def __init__(self, title: str, detail: str = "") -> None:
        super().__init__(title)
        self.title = title
        self.detail = detail


def settings() -> KubemateSettings:
    try:
        return KubemateSettings()
    except ValidationError as exc:
        raise CliFailure("Invalid configuration", str(exc)) from None


@contextmanager
def clean_errors() -> Iterator[None]:
    """Print the errors a user can act on as a message and exit 1."""
    try:
        yield
    except ApiError as exc:
        _fail(f"{exc.title} (HTTP {exc.status})", exc.detail)
    except GatewayUnreachable as exc:
        _fail(
            f"Cannot reach Kubemate at {exc.url}",
            f"{exc.reason}\nIs the stack running? Start it with `kubemate up`, or pass --url.",
        )
    except CliFailure as exc:
        _fail(exc.title, exc.detail)


def _fail(title: str, detail: str) -> None:
    console = err_console()
    console.print(f"[bold red]Error:[/] {escape(title)}")
    if detail:
        console.print(escape(detail))
    raise typer.Exit(1)


# ---- options shared by the client commands -----------------------------------------------------

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="KUBEMATE_URL",
        help="Gateway URL. Default: $KUBEMATE_URL, else the URL `kubemate up` wrote to "
        f"<data-dir>/{STACK_FILE}, else {DEFAULT_URL}.",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="KUBEMATE_TOKEN",
        help="Bearer token. Default: $KUBEMATE_TOKEN; in development mode, else a token minted "
        f"here for tenant '{DEFAULT_TENANT}' with the configured secret (see `kubemate token`).",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="KUBEMATE_DATA_DIR",
        help=f"Where `kubemate up` keeps its data (and {STACK_FILE}).",
    ),
]
CollectionOption = Annotated[str, typer.Option("--collection", "-c", help="Knowledge collection.")]


def read_stack_file(data_dir: Path) -> dict[str, object] | None:
    try:
        data = json.loads((data_dir / STACK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def resolve_url(url: str | None, data_dir: Path) -> str:
    if url:
        return url
    stack = read_stack_file(data_dir)
    if stack and isinstance(stack.get("url"), str):
        return str(stack["url"])
    return DEFAULT_URL


def resolve_token(token: str | None) -> str:
    if token:
        return token
    cfg = settings()
    if cfg.mode != "development":
        raise CliFailure(
            "No token",
            "Production mode: pass --token or set KUBEMATE_TOKEN (a token from your identity "
            "provider, or `kubemate token` on a machine that holds the secret).",
        )
    # The embedded stack's one user runs the platform too (models, runtimes): its tenant is an
    # operator tenant by default (auth.operator_tenants).
    return issue_token(cfg.auth, DEFAULT_TENANT, roles=(Role.OPERATOR,))


def make_client(
    ctx: typer.Context, url: str | None, token: str | None, data_dir: Path
) -> KubemateClient:
    quiet_logs()
    cli = state(ctx)
    return KubemateClient(
        resolve_url(url, data_dir),
        resolve_token(token),
        transport=cli.transport,
        retry=cli.retry,
        sleep=cli.sleep,
        notify=notice,
    )
