"""The ``kubemate`` Typer application; ``main`` is the console script's entry point."""

from __future__ import annotations

from typing import Annotated

import typer

from kubemate.auth import Role, issue_token
from kubemate.auth.tokens import TENANT_ID_PATTERN
from kubemate_cli.ask import ask
from kubemate_cli.backup import app as backup_app
from kubemate_cli.collections import app as collections_app
from kubemate_cli.common import DEFAULT_TENANT, clean_errors, settings
from kubemate_cli.ingest import ingest
from kubemate_cli.models import app as models_app
from kubemate_cli.reindex import reindex
from kubemate_cli.up import up

app = typer.Typer(
    name="kubemate",
    help="Kubemate: ask questions about your documents, on your own machine.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)
app.command()(up)
app.command()(ingest)
app.command()(ask)
app.command()(reindex)
app.add_typer(models_app, name="models")
app.add_typer(collections_app, name="collections")
app.add_typer(backup_app, name="backup")


def _tenant(value: str) -> str:
    if not TENANT_ID_PATTERN.match(value):
        raise typer.BadParameter("letters, digits, '_' and '-', at most 63, starting alphanumeric")
    return value


@app.command()
def token(
    tenant: Annotated[
        str, typer.Option("--tenant", callback=_tenant, help="Tenant the token is for.")
    ] = DEFAULT_TENANT,
    user: Annotated[str, typer.Option("--user", help="Subject (user id).")] = "dev",
    role: Annotated[
        list[Role] | None,
        typer.Option(
            "--role",
            help="Role; repeat for several (operator: only for an operator tenant). "
            "Default: admin.",
            show_default=False,
        ),
    ] = None,
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Lifetime in seconds.")] = 86400,
) -> None:
    """Print a JWT signed with the configured secret (KUBEMATE_AUTH__JWT_SECRET).

    For example: export KUBEMATE_TOKEN=$(kubemate token --tenant acme)
    """
    with clean_errors():
        auth = settings().auth
    roles = tuple(dict.fromkeys(role)) if role else (Role.ADMIN,)
    # Plain echo: rich would wrap the long token at the terminal width.
    typer.echo(issue_token(auth, tenant, user_id=user, roles=roles, ttl_s=ttl))


def main() -> None:
    app()
