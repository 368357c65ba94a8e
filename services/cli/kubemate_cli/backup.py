"""`kubemate backup create|list|verify|restore|prune`: every piece of state, to a directory or
an S3 bucket (``KUBEMATE_BACKUP__TARGET__*``), with the services' own settings.

``create`` runs while the services run; ``restore`` needs them stopped (workers included), and
asks before it replaces anything unless ``--yes``. The domain is
:mod:`kubemate_ingest.backup`; the ingest service offers create, list and verify over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kubemate.errors import KubemateError
from kubemate_cli.common import CliFailure, clean_errors, mib, quiet_logs
from kubemate_ingest.backup import prune, restore_backup, verify_backup
from kubemate_ingest.backup.wiring import backup_target, restore_destination, take_backup
from kubemate_ingest.settings import IngestSettings

app = typer.Typer(help="Back up and restore every piece of state.", no_args_is_help=True)

BackupId = Annotated[str, typer.Argument(help="The backup's id (see `kubemate backup list`).")]


def _settings() -> IngestSettings:
    return IngestSettings()


@contextmanager
def _errors() -> Iterator[None]:
    """Our errors (a backup not found, a corrupt one, a backend down) and a configuration the
    settings refuse, as a message and exit 1, like every other command's."""
    with clean_errors():
        try:
            yield
        except KubemateError as exc:
            raise CliFailure(exc.title, exc.detail) from None
        except ValidationError as exc:
            raise CliFailure("Invalid configuration", str(exc)) from None


@app.command()
def create(
    prune_after: Annotated[
        bool, typer.Option("--prune/--no-prune", help="Apply retention (backup.keep_last) after.")
    ] = True,
) -> None:
    """Take a backup now (safe while ingestion runs)."""
    console = Console()
    with _errors():
        quiet_logs()
        manifest = take_backup(_settings(), prune_after=prune_after)
        console.print(
            f"[green]backup {manifest.id}[/] in {manifest.seconds:.1f} s: "
            f"{manifest.objects.count} objects ({manifest.objects.copied} copied), "
            f"{sum(v.rows for v in manifest.vectors)} vectors, {mib(manifest.size_bytes)}"
        )
    typer.echo(manifest.id)


@app.command("list")
def list_backups() -> None:
    """Finished backups, oldest first."""
    with _errors():
        quiet_logs()
        manifests = backup_target(_settings()).manifests()
    table = Table()
    table.add_column("id", no_wrap=True)  # copied into `verify` and `restore`: never wrapped
    for name in ("finished (UTC)", "seconds", "objects", "vectors", "size"):
        table.add_column(name)
    for m in manifests:
        table.add_row(
            m.id,
            f"{m.finished_at:%Y-%m-%d %H:%M}",
            f"{m.seconds:.1f}",
            str(m.objects.count),
            str(sum(v.rows for v in m.vectors)),
            mib(m.size_bytes),
        )
    Console().print(table)


@app.command()
def verify(
    backup_id: BackupId,
    full: Annotated[bool, typer.Option("--full", help="Re-hash every object blob too.")] = False,
) -> None:
    """Check a backup against its manifest without restoring it; exit 1 on any problem."""
    with _errors():
        quiet_logs()
        result = verify_backup(backup_target(_settings()), backup_id, full=full)
    for problem in result.problems:
        Console(stderr=True).print(f"[red]{escape(problem)}[/]")
    if not result.ok:
        raise typer.Exit(1)
    Console().print(f"[green]ok[/] {result.files} files, {result.objects} objects")


@app.command()
def restore(
    backup_id: BackupId,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Replace the database, objects, vectors and queue with a backup's. Stop the services
    (workers included) first; start them after: unfinished documents are queued again."""
    if not yes:
        typer.confirm(
            f"Replace ALL current data with backup {backup_id}? The services must be stopped",
            abort=True,
        )
    console = Console()
    with _errors():
        quiet_logs()
        settings = _settings()
        destination = restore_destination(settings)
        try:
            report = restore_backup(backup_target(settings), backup_id, destination)
        finally:
            destination.close()
    console.print(
        f"[green]restored {escape(report.backup_id)}[/] in {report.seconds:.1f} s: "
        f"{report.kept} documents complete, {report.requeued} queued again, "
        f"{report.dropped} dropped (deleted during the backup), {report.vectors} vectors, "
        f"{report.objects} objects"
    )


@app.command("prune")
def prune_backups() -> None:
    """Apply retention now: keep the newest backup.keep_last backups."""
    with _errors():
        quiet_logs()
        settings = _settings()
        pruned = prune(backup_target(settings), settings.backup.keep_last)
    Console().print(
        f"pruned {len(pruned.backups)} backups, {pruned.blobs} blobs ({mib(pruned.blob_bytes)})"
    )
