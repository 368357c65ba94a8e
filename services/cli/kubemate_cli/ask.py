"""`kubemate ask`: one question, the answer and its sources."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from kubemate_cli.client import ChatAnswer
from kubemate_cli.common import (
    CollectionOption,
    DataDirOption,
    TokenOption,
    UrlOption,
    clean_errors,
    make_client,
)

SNIPPET_CHARS = 160


def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question, quoted.")],
    collection: CollectionOption = "default",
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", min=1, max=100, help="Passages to retrieve.")
    ] = 5,
    url: UrlOption = None,
    token: TokenOption = None,
    data_dir: DataDirOption = Path(".kubemate"),
) -> None:
    """Ask a question; prints the answer and the sources it cites."""
    console = Console()
    with clean_errors(), make_client(ctx, url, token, data_dir) as client:
        with console.status("Thinking..."):
            answer = client.chat(question, collection=collection, top_k=top_k)
        render_answer(console, answer)


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"


def _subtitle(answer: ChatAnswer) -> str | None:
    if answer.cannot_answer:
        return "cannot answer"
    if answer.answer_mode == "extractive":
        return "quoted from the sources"
    return escape(answer.model) if answer.model else None


def render_answer(console: Console, answer: ChatAnswer) -> None:
    console.print(
        Panel(
            escape(answer.answer.strip()) or "[dim](empty answer)[/]",
            title="Answer",
            title_align="left",
            subtitle=_subtitle(answer),
            subtitle_align="right",
        )
    )
    for sentence in answer.unsupported_sentences:
        console.print(f"[yellow]Not supported by the cited sources:[/] {escape(sentence)}")
    if not answer.citations:
        console.print("[dim]No sources.[/]")
    else:
        table = Table(title="Sources", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("Source", overflow="fold")
        table.add_column("Page", justify="right")
        table.add_column("Score", justify="right")
        table.add_column("Snippet", overflow="fold")
        for c in answer.citations:
            table.add_row(
                str(c.index),
                escape(c.source or c.document_id or ""),
                "" if c.page is None else str(c.page),
                "" if c.score is None else f"{c.score:.3f}",
                escape(_snippet(c.snippet)),
            )
        console.print(table)
    if answer.timings:
        parts = ", ".join(f"{stage} {ms:.0f} ms" for stage, ms in answer.timings.items())
        console.print(f"[dim]{escape(parts)}[/]")
