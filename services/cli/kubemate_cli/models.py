"""`kubemate models pull|ls|ps|rm|upload`: manage the models of the runtimes and the registry.

``pull`` follows the pull task's Server-Sent Events (``/v1/models/pulls/{id}/events``) with a
progress bar in bytes; ``upload`` streams the file with a progress bar after hashing it, so the
server checks the SHA-256 it receives against the one computed here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from httpx_sse import SSEError, connect_sse
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from kubemate_cli.client import ApiError, GatewayUnreachable, send
from kubemate_cli.common import (
    CliFailure,
    CliState,
    DataDirOption,
    TokenOption,
    UrlOption,
    clean_errors,
    notice,
    quiet_logs,
    resolve_token,
    resolve_url,
    state,
)

app = typer.Typer(
    name="models",
    help="Pull, list, load and remove models; upload model files into the registry.",
    no_args_is_help=True,
)

RuntimeOption = Annotated[
    str | None,
    typer.Option("--runtime", "-r", help="Runtime id: ollama:<instance>, llamacpp or registry."),
]
UPLOAD_CHUNK = 1024 * 1024


class ModelsApi:
    """The model manager's routes, through the gateway."""

    def __init__(self, base_url: str, token: str, cli: CliState) -> None:
        self.base_url = base_url.rstrip("/")
        self._cli = cli
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(30.0, read=120.0),
            transport=cli.transport,
        )

    def request(
        self,
        method: str,
        path: str,
        body: Callable[[], dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> Any:
        """``body`` builds a streamed body anew for each try (a 429 is tried again)."""
        response = send(
            self._http,
            method,
            path,
            policy=self._cli.retry,
            sleep=self._cli.sleep,
            notify=notice,
            body=body,
            **kwargs,
        )
        if response.is_error:
            raise ApiError.from_response(response)
        return response.json() if response.content else None

    def pull_events(self, task_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(event, task)`` pairs until the server ends the stream (after the last state)."""
        timeout = httpx.Timeout(30.0, read=120.0)  # the server pings every 15 s
        try:
            with connect_sse(
                self._http, "GET", f"/v1/models/pulls/{task_id}/events", timeout=timeout
            ) as source:
                if source.response.is_error:
                    source.response.read()
                    raise ApiError.from_response(source.response)
                try:
                    for event in source.iter_sse():
                        yield event.event, json.loads(event.data)
                except (SSEError, ValueError) as exc:
                    raise CliFailure("The pull's event stream is unreadable", str(exc)) from None
        except httpx.TransportError as exc:
            raise GatewayUnreachable(self.base_url, str(exc) or type(exc).__name__) from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ModelsApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _api(ctx: typer.Context, url: str | None, token: str | None, data_dir: Path) -> ModelsApi:
    quiet_logs()
    return ModelsApi(resolve_url(url, data_dir), resolve_token(token), state(ctx))


def _size(value: Any) -> str:
    if not isinstance(value, int):
        return ""
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def _bytes_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )


@app.command("ls")
def list_models(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = Path(".kubemate"),
) -> None:
    """List the models of every runtime, the registry and the knowledge collections."""
    console = Console()
    with clean_errors(), _api(ctx, url, token, data_dir) as api:
        body = api.request("GET", "/v1/models")
    table = Table(title="Models", title_justify="left")
    for column in ("Name", "Runtime", "Size", "Family", "Quantization", "Role"):
        table.add_column(column, overflow="fold")
    for model in body.get("data", []):
        table.add_row(
            escape(str(model.get("name") or model["id"])),
            escape(str(model.get("runtime") or "")),
            _size(model.get("size")),
            escape(str(model.get("family") or "")),
            escape(str(model.get("quantization") or "")),
            escape(str(model.get("role") or "")),
        )
    console.print(table)
    for runtime, reason in (body.get("unavailable") or {}).items():
        console.print(f"[yellow]{escape(runtime)} unavailable:[/] {escape(reason)}")


@app.command("ps")
def running(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = Path(".kubemate"),
) -> None:
    """List the loaded models, their memory and when they unload."""
    console = Console()
    with clean_errors(), _api(ctx, url, token, data_dir) as api:
        body = api.request("GET", "/v1/models/running")
    table = Table(title="Loaded models", title_justify="left")
    for column in ("Name", "Runtime", "Size", "VRAM", "Until"):
        table.add_column(column, overflow="fold")
    for model in body.get("models", []):
        table.add_row(
            escape(model["name"]),
            escape(model["runtime"]),
            _size(model.get("size")),
            _size(model.get("size_vram")),
            escape(str(model.get("expires_at") or "until unloaded")),
        )
    console.print(table)
    for runtime, reason in (body.get("unavailable") or {}).items():
        console.print(f"[yellow]{escape(runtime)} unavailable:[/] {escape(reason)}")


@app.command("pull")
def pull(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name, e.g. llama3.2 or a registry name.")],
    runtime: RuntimeOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = Path(".kubemate"),
) -> None:
    """Pull a model onto a runtime and follow the download."""
    console = Console()
    failed: str | None = None
    with clean_errors(), _api(ctx, url, token, data_dir) as api:
        payload: dict[str, Any] = {"model": name}
        if runtime:
            payload["runtime"] = runtime
        task = api.request("POST", "/v1/models/pull", json=payload)
        if task.get("shared"):
            console.print("Already being pulled: following that pull.")
        failed = _follow_pull(console, api, task)
    if failed is not None:
        Console(stderr=True).print(f"[bold red]Error:[/] pull failed: {escape(failed)}")
        raise typer.Exit(1)
    console.print(f"[green]Pulled[/] {escape(name)}")


def _follow_pull(console: Console, api: ModelsApi, task: dict[str, Any]) -> str | None:
    """Shows the pull until it ends; returns the reason when it failed."""
    label = escape(f"{task['model']} ({task['runtime']})")
    with _bytes_progress(console) as progress:
        bar = progress.add_task(label, total=task.get("total") or None, status="")
        final = task
        if task["state"] not in ("COMPLETED", "FAILED"):
            for _, final in api.pull_events(task["task_id"]):
                progress.update(
                    bar,
                    total=final.get("total") or None,
                    completed=final.get("completed") or 0,
                    status=escape(str(final.get("status") or "")),
                )
        if final["state"] == "COMPLETED":
            total = final.get("total") or 1
            progress.update(bar, total=total, completed=total, status="success")
            return None
    if final["state"] == "FAILED":
        return str(final.get("error") or "unknown reason")
    return "the event stream ended before the pull did"


@app.command("rm")
def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    runtime: RuntimeOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = Path(".kubemate"),
) -> None:
    """Delete a model (refused while it serves chat, embeddings or rerank)."""
    console = Console()
    with clean_errors(), _api(ctx, url, token, data_dir) as api:
        params = {"runtime": runtime} if runtime else None
        body = api.request("DELETE", f"/v1/models/{name}", params=params)
    console.print(f"[green]Deleted[/] {escape(body['deleted'])} from {escape(body['runtime'])}")


def _sha256(path: Path, progress: Progress) -> str:
    digest = hashlib.sha256()
    bar = progress.add_task(escape(f"hash {path.name}"), total=path.stat().st_size, status="")
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK):
            digest.update(chunk)
            progress.advance(bar, len(chunk))
    return digest.hexdigest()


def _chunks(path: Path, advance: Callable[[int], None]) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK):
            advance(len(chunk))
            yield chunk


@app.command("upload")
def upload(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="GGUF or ONNX.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Registry name. Default: the file's stem.")
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="Hash first; the server checks it.")
    ] = True,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = Path(".kubemate"),
) -> None:
    """Upload a model file into the registry (for clusters and machines without internet)."""
    console = Console()
    model = name or path.stem
    size = path.stat().st_size
    with (
        clean_errors(),
        _api(ctx, url, token, data_dir) as api,
        _bytes_progress(console) as progress,
    ):
        params = {"name": model}
        if verify:
            params["sha256"] = _sha256(path, progress)
        bar = progress.add_task(escape(f"upload {path.name}"), total=size, status="")

        def content() -> dict[str, Any]:
            progress.reset(bar, total=size)  # a retried upload starts over
            return {"content": _chunks(path, lambda n: progress.advance(bar, n))}

        body = api.request(
            "POST",
            "/v1/models/upload",
            body=content,
            params=params,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
            },
            timeout=httpx.Timeout(30.0, read=3600.0),
        )
    details = ", ".join(
        str(v) for v in (body.get("family"), body.get("quantization")) if v is not None
    )
    console.print(
        f"[green]Uploaded[/] {escape(body['name'])} ({body['format']}"
        f"{', ' + escape(details) if details else ''}), sha256 {body['sha256']}"
    )
