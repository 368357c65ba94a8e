"""`kubemate ingest`: upload files, follow their ingestion, summarise."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from kubemate_cli.client import ApiError, KubemateClient, TaskStatus, TaskWatcher, Upload
from kubemate_cli.common import (
    CollectionOption,
    DataDirOption,
    TokenOption,
    UrlOption,
    clean_errors,
    make_client,
    state,
)

_STATE_STYLE = {"COMPLETED": "green", "FAILED": "red", "TIMEOUT": "red", "UPLOAD FAILED": "red"}


@dataclass
class FileResult:
    path: Path
    upload: Upload | None = None
    status: TaskStatus | None = None
    error: str | None = None  # an upload that was refused, or a task that timed out

    @property
    def state(self) -> str:
        if self.upload is None:
            return "UPLOAD FAILED"
        if self.status is not None:
            return self.status.state
        return self.upload.state

    @property
    def ok(self) -> bool:
        return self.upload is not None and self.error is None and self.state != "FAILED"


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given; directories walked recursively for files.

    Inside a directory, hidden files and directories (.git, .DS_Store) are skipped: nobody means
    to ingest those. A hidden file named explicitly is still taken.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            found = [path]
        for p in found:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                files.append(p)
    return files


def ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            exists=True, readable=True, help="Files, or directories to ingest recursively."
        ),
    ],
    collection: CollectionOption = "default",
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = Path(".kubemate"),
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow each file until it is indexed.")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for all files.")
    ] = 600.0,
) -> None:
    """Upload documents and follow their ingestion with one progress bar per file."""
    console = Console()
    files = expand_paths(paths)
    if not files:
        console.print("No files to ingest.")
        raise typer.Exit(1)
    with clean_errors(), make_client(ctx, url, token, data_dir) as client:
        results = _upload_all(console, client, files, collection)
        if wait:
            _follow(console, client, state(ctx).watcher, results, timeout)
        _summary(console, results, waited=wait)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def _upload_all(
    console: Console, client: KubemateClient, files: list[Path], collection: str
) -> list[FileResult]:
    results = []
    with console.status("Uploading...") as status:
        for path in files:
            status.update(f"Uploading {escape(str(path))}")
            result = FileResult(path)
            try:
                result.upload = client.upload(path, collection)
            except ApiError as exc:
                # One refused file (unsupported type, too large) must not stop the others.
                result.error = f"{exc.title}: {exc.detail}" if exc.detail else exc.title
            results.append(result)
    return results


def _chunks(status: TaskStatus | None) -> str:
    if status is None or not status.progress.total:
        return ""
    return f"{status.progress.done}/{status.progress.total} chunks"


def _follow(
    console: Console,
    client: KubemateClient,
    watcher: TaskWatcher,
    results: list[FileResult],
    timeout_s: float,
) -> None:
    by_task = {r.upload.task_id: r for r in results if r.upload is not None}
    if not by_task:
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[state]}"),
        TextColumn("{task.fields[chunks]}"),
        TimeElapsedColumn(),
        console=console,
    )
    bars: dict[str, TaskID] = {}
    pending = []
    with progress:
        for task_id, result in by_task.items():
            assert result.upload is not None
            bars[task_id] = progress.add_task(
                escape(result.path.name), total=None, state=result.upload.state, chunks=""
            )
            if result.upload.state in ("COMPLETED", "FAILED"):
                # A duplicate of a document already indexed: nothing to follow.
                progress.update(bars[task_id], total=1, completed=1)
            else:
                pending.append(task_id)
        for status in watcher.watch(client, pending, timeout_s):
            result = by_task[status.task_id]
            result.status = status
            total = status.progress.total or None
            completed = status.progress.done
            if status.state == "COMPLETED":
                total, completed = total or 1, total or 1
            progress.update(
                bars[status.task_id],
                total=total,
                completed=completed,
                state=_styled(status.state),
                chunks=_chunks(status),
            )
    for result in by_task.values():
        if result.state not in ("COMPLETED", "FAILED"):
            result.error = f"still {result.state} after {timeout_s:g} s"


def _styled(state_name: str) -> str:
    style = _STATE_STYLE.get(state_name)
    return f"[{style}]{state_name}[/]" if style else state_name


def _summary(console: Console, results: list[FileResult], *, waited: bool) -> None:
    table = Table(title="Ingestion", title_justify="left")
    table.add_column("File", overflow="fold")
    table.add_column("Document", overflow="fold")
    if not waited:
        table.add_column("Task", overflow="fold")
    table.add_column("State")
    table.add_column("Chunks / error", overflow="fold")
    for r in results:
        label = _styled("TIMEOUT" if r.error and r.upload else r.state)
        if r.upload and r.upload.duplicate:
            label += " (duplicate)"
        if r.error:
            note = f"[red]{escape(r.error)}[/]"
        elif r.status and r.status.error:
            note = f"[red]{escape(r.status.error)}[/]"
        elif r.status and r.status.progress.total:
            note = str(r.status.progress.total)
        else:
            note = ""
        row = [escape(str(r.path)), r.upload.document_id if r.upload else ""]
        if not waited:
            row.append(r.upload.task_id if r.upload else "")
        row += [label, note]
        table.add_row(*row)
    console.print(table)
    failed = sum(not r.ok for r in results)
    if failed:
        console.print(f"[red]{failed} of {len(results)} file(s) failed.[/]")
