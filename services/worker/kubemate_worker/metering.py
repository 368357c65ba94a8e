"""Embedding tokens metered per tenant, although the worker embeds several tenants at once.

The worker's :class:`~kubemate_worker.embedding.EmbedService` batches the chunks of all
documents in flight into one model call, so a :class:`~kubemate.metering.MeteredEmbedder`
(one tenant per wrapped embedder) cannot attribute the call. Instead each document's work goes
through a :class:`TenantEmbedService`, a view of the shared service that counts the tokens of the
texts it submits, once per document an ``embed`` row (tokens estimated with cl100k_base, the
number of chunks, the time spent waiting for vectors). A completed document's rows go in its
completion transaction (:meth:`EmbedUsage.take_rows`); any other ending writes them through the
same :class:`~kubemate.metering.UsageMeter` the metered adapters use
(:meth:`EmbedUsage.flush`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from kubemate.metadata.usage import UsageRow
from kubemate.metering import UsageMeter
from kubemate.text.tokens import count_tokens
from kubemate_worker.embedding import EmbedService, Vector


@dataclass
class _Totals:
    tokens: int = 0
    inputs: int = 0
    seconds: float = 0.0


class EmbedUsage:
    """What one tenant's work embedded so far, per model. Thread-safe: the embedding calls
    finish on the context's event loop, the flush comes from a task thread."""

    def __init__(self, tenant_id: str, tokens: Callable[[str], int] = count_tokens) -> None:
        self.tenant_id = tenant_id
        self._tokens = tokens
        self._lock = threading.Lock()
        self._by_model: dict[str, _Totals] = {}

    def add(self, model: str, texts: Sequence[str], seconds: float) -> None:
        tokens = sum(self._tokens(t) for t in texts)
        with self._lock:
            totals = self._by_model.setdefault(model, _Totals())
            totals.tokens += tokens
            totals.inputs += len(texts)
            totals.seconds += seconds

    def take(self) -> dict[str, _Totals]:
        with self._lock:
            taken, self._by_model = self._by_model, {}
        return taken

    def take_rows(self) -> list[UsageRow]:
        """What was counted, as ``embed`` rows (one per model), for a caller that writes them in
        a transaction of its own; :meth:`put_back` if that write fails."""
        return [
            UsageRow(
                kind="embed",
                model=model,
                prompt_tokens=totals.tokens,
                chunks=totals.inputs,
                latency_ms=totals.seconds * 1000,
            )
            for model, totals in self.take().items()
            if totals.inputs
        ]

    def put_back(self, rows: Sequence[UsageRow]) -> None:
        """Rows of :meth:`take_rows` that were not written: counted again, so a later flush
        writes them."""
        with self._lock:
            for row in rows:
                totals = self._by_model.setdefault(row.model, _Totals())
                totals.tokens += row.prompt_tokens
                totals.inputs += row.chunks
                totals.seconds += row.latency_ms / 1000

    def flush(self, meter: UsageMeter, run: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        """Write what was counted (one row per model) and start again. Never raises: the
        meter logs a failed write, and metering must not fail the document."""
        for row in self.take_rows():
            run(meter.submit(self.tenant_id, row))


class TenantEmbedService:
    """The shared :class:`EmbedService`, counting what one tenant's work submits."""

    def __init__(self, service: EmbedService, usage: EmbedUsage) -> None:
        self._service = service
        self._usage = usage

    def __getattr__(self, name: str) -> Any:
        # model, batch_size, dimension, embedder, aclose: the shared service's
        return getattr(self._service, name)

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        started = time.perf_counter()
        vectors = await self._service.embed(texts)
        self._usage.add(self._service.model, texts, time.perf_counter() - started)
        return vectors
