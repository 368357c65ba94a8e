"""`kubemate collections [template NAME TEMPLATE]`: the knowledge collections and their index
templates.

Without a subcommand, lists ``GET /v1/collections``: each collection with the index template
serving the tenant now, and what every template would cost at the collection's expected size.
``template`` changes it (``PUT /v1/collections/{name}/template``, a tenant admin's): a re-index
into the new template's vector collection, followed like ``kubemate reindex`` with ``--wait``;
the current index serves until it completes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kubemate_cli.common import (
    DataDirOption,
    TokenOption,
    UrlOption,
    clean_errors,
    mib,
    quiet_logs,
    resolve_token,
    resolve_url,
    state,
)
from kubemate_cli.models import ModelsApi
from kubemate_cli.reindex import follow, report_end

app = typer.Typer(
    name="collections",
    help="List the knowledge collections and their index templates; change a template.",
    invoke_without_command=True,
)

_CONNECTION = ("url", "token", "data_dir")


@app.callback()
def list_collections(
    ctx: typer.Context,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = Path(".kubemate"),
) -> None:
    """List the collections with the index template each uses, and every template's cost."""
    if ctx.invoked_subcommand is not None:
        # The subcommand takes its own: given here, they would be silently ignored. (By name:
        # Typer ships its own copy of click's ParameterSource.)
        given = [
            name
            for name in _CONNECTION
            if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
        ]
        if given:
            raise typer.BadParameter(
                f"give --{given[0].replace('_', '-')} after `{ctx.invoked_subcommand}`"
            )
        return
    console = Console()
    with clean_errors():
        quiet_logs()
        with ModelsApi(resolve_url(url, data_dir), resolve_token(token), state(ctx)) as api:
            collections = api.request("GET", "/v1/collections")
    console.print(_collections_table(collections))
    for collection in collections:
        console.print(_templates_table(collection))


def _collections_table(collections: list[dict[str, Any]]) -> Table:
    table = Table(title="Collections", title_justify="left")
    for column in ("Name", "Template", "Configured", "Embedder", "Language", "Expected vectors"):
        table.add_column(column, overflow="fold")
    for c in collections:
        table.add_row(
            escape(c["name"]),
            escape(c["index_template"]),
            escape(c["configured_template"]),
            escape(c["embedder"]),
            escape(c["language"]),
            f"{c['expected_vectors']:,}",
        )
    return table


def _templates_table(collection: dict[str, Any]) -> Table:
    """What each template would cost the collection at its expected size (estimates)."""
    table = Table(
        title=f"Index templates of {escape(collection['name'])} "
        f"(estimates at {collection['expected_vectors']:,} vectors)",
        title_justify="left",
    )
    for column in ("Template", "Index", "Memory", "Distances per query", "Exact", "In use"):
        table.add_column(column, overflow="fold")
    for t in collection["templates"]:
        table.add_row(
            escape(t["name"]),
            escape(t["index"]),
            mib(t["memory_bytes"]),
            f"{t['distances_per_query']:,}",
            "yes" if t["exact"] else "no",
            "[green]yes[/]" if t["current"] else "",
        )
    return table


@app.command("template")
def change_template(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The collection, e.g. default.")],
    template: Annotated[
        str,
        typer.Argument(help="The index template to use (`kubemate collections` lists them)."),
    ],
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow the re-index it starts until it ends.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = Path(".kubemate"),
) -> None:
    """Index a collection by another template; prints the re-index this starts.

    The new index serves once the re-index completes; the current one serves until then.
    """
    console = Console()
    with clean_errors():
        quiet_logs()
        cli = state(ctx)
        with ModelsApi(resolve_url(url, data_dir), resolve_token(token), cli) as api:
            job = api.request(
                "PUT",
                f"/v1/collections/{quote(name, safe='')}/template",
                json={"template": template},
            )
            job = follow(api, job, console, wait=wait, sleep=cli.sleep)
    report_end(job, console)
