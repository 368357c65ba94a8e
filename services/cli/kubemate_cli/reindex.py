"""`kubemate reindex`: re-embed a collection's documents with another embedding model.

Starts ``POST /v1/reindex`` and, unless ``--no-wait``, polls ``GET /v1/reindex/{id}`` until it
ends. Queries keep using the current model until every document is re-embedded. ``--cancel ID``
stops one instead (``POST /v1/reindex/{id}/cancel``): the current model keeps serving.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape

from kubemate_cli.common import (
    CollectionOption,
    DataDirOption,
    TokenOption,
    UrlOption,
    clean_errors,
    quiet_logs,
    resolve_token,
    resolve_url,
    state,
)
from kubemate_cli.models import ModelsApi

POLL_S = 1.0
ENDED = ("COMPLETED", "FAILED", "CANCELLED")


def reindex(
    ctx: typer.Context,
    collection: CollectionOption = "default",
    provider: Annotated[
        str | None,
        typer.Option(help="Embedding provider, e.g. sentence_transformers, ollama, openai."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Embedding model name.")] = None,
    base_url: Annotated[str | None, typer.Option(help="Runtime URL (ollama, openai).")] = None,
    wait: Annotated[bool, typer.Option(help="Follow the re-index until it ends.")] = True,
    cancel: Annotated[
        str | None,
        typer.Option(
            "--cancel",
            metavar="ID",
            help="Cancel the PENDING or RUNNING re-index ID instead of starting one.",
        ),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = Path(".kubemate"),
) -> None:
    """Re-embed a collection with another model (default: the one the settings configure);
    the switch happens only once every document is done."""
    if (provider is None) != (model is None):
        raise typer.BadParameter("give --provider and --model together")
    if cancel is not None and provider is not None:
        raise typer.BadParameter("--cancel starts nothing: leave out --provider and --model")
    body: dict[str, Any] = {"collection": collection}
    if provider is not None:
        body["embedder"] = {"provider": provider, "model": model, "base_url": base_url}
    console = Console()
    with clean_errors():
        quiet_logs()
        cli = state(ctx)
        # The model manager's small client: plain JSON calls through the gateway.
        with ModelsApi(resolve_url(url, data_dir), resolve_token(token), cli) as api:
            if cancel is not None:
                _cancel(api, cancel, console)
                return
            job = api.request("POST", "/v1/reindex", json=body)
            job = follow(api, job, console, wait=wait, sleep=cli.sleep)
    report_end(job, console)


def follow(
    api: ModelsApi,
    job: dict[str, Any],
    console: Console,
    *,
    wait: bool,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """Print the re-index just started and, with ``wait``, poll it until it ends."""
    console.print(
        f"Re-index {job['reindex_id']}: {escape(job['old_vector_collection'])} -> "
        f"{escape(job['new_vector_collection'])}"
    )
    while wait and job["state"] not in ENDED:
        sleep(POLL_S)
        job = api.request("GET", f"/v1/reindex/{job['reindex_id']}")
        progress = job["progress"]
        console.print(f"{job['state']} {progress['done']}/{progress['total']} documents")
    return job


def report_end(job: dict[str, Any], console: Console) -> None:
    """The re-index's state last seen; exit 1 when it failed or was cancelled."""
    if job["state"] in ("FAILED", "CANCELLED"):
        # Cancelled while followed (by someone else, or from another terminal): not what this
        # command was asked for, so it fails as a failed re-index does.
        reason = escape(job["error"] or "")
        Console(stderr=True).print(f"[bold red]Error:[/] re-index {job['state'].lower()}: {reason}")
        raise typer.Exit(1)
    console.print(f"[green]{escape(job['state'])}[/] {escape(job['collection'])}")


def _cancel(api: ModelsApi, reindex_id: str, console: Console) -> None:
    """One that already ended is a 409 (printed by clean_errors, exit 1)."""
    job = api.request("POST", f"/v1/reindex/{quote(reindex_id, safe='')}/cancel")
    console.print(
        f"[yellow]{escape(job['state'])}[/] re-index {escape(job['reindex_id'])}: "
        f"{escape(job['old_vector_collection'])} keeps serving"
    )
