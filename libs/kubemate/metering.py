"""Metering: who used which model how much, recorded once, reported twice.

The ledger is the metadata store's ``usage`` table (:class:`UsageRepository`): one row
per generation, embedding call or processed document, with the tenant, model, tokens, bytes,
chunks and latency. :class:`UsageMeter` writes it, :class:`MeteredLLM` / :class:`MeteredEmbedder`
wrap any InferenceInterface adapter so every call is written without the caller remembering to,
and :class:`UsageCollector` exports the ledger's running totals as Prometheus counters
(``kubemate_tokens_total{tenant,model,kind}`` and friends) from the one process that registers it
(the model manager), so a counter is never counted twice by two processes and survives restarts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence

import anyio
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import REGISTRY, CollectorRegistry

from kubemate.errors import ServiceError
from kubemate.inference.base import (
    LLM,
    Completion,
    Embedder,
    GenerateOptions,
    ModelKind,
    Prompt,
    plain_text,
)
from kubemate.logs import get_logger
from kubemate.metadata.store import MetadataStore
from kubemate.metadata.usage import UsageKind, UsageRow, UsageTotals
from kubemate.text.tokens import count_tokens

log = get_logger(__name__)


class UsageMeter:
    """Writes usage rows off the event loop. A failed write is logged, never raised: metering
    must not fail the request it measures."""

    def __init__(self, store: MetadataStore) -> None:
        self._store = store

    async def record(
        self,
        tenant_id: str,
        *,
        kind: UsageKind,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        size_bytes: int = 0,
        chunks: int = 0,
        latency_s: float = 0.0,
    ) -> None:
        try:
            row = UsageRow(
                kind=kind,
                model=model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                bytes=size_bytes,
                chunks=chunks,
                latency_ms=latency_s * 1000,
            )
        except ValueError as exc:  # an unknown kind: logged like a failed write, never raised
            log.warning("usage.record_failed", kind=kind, model=model, error=type(exc).__name__)
            return
        await self.submit(tenant_id, row)

    async def submit(self, tenant_id: str, row: UsageRow) -> None:
        """Writes ``row``: here at once, in a worker thread; a subclass may write it later."""
        await anyio.to_thread.run_sync(self.write_row, tenant_id, row)

    def write_row(self, tenant_id: str, row: UsageRow) -> None:
        """One row, blocking; a failure is logged (the ledger is down: the answer goes out)."""
        try:
            self._store.usage.add(tenant_id, row)
        except Exception as exc:  # metering never fails what it measures
            log.warning(
                "usage.record_failed", kind=row.kind, model=row.model, error=type(exc).__name__
            )

    async def generation(self, tenant_id: str, completion: Completion, latency_s: float) -> None:
        await self.record(
            tenant_id,
            kind="generate",
            model=completion.model,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
            latency_s=latency_s,
        )

    async def embedding(
        self, tenant_id: str, model: str, tokens: int, latency_s: float, inputs: int = 1
    ) -> None:
        await self.record(
            tenant_id,
            kind="embed",
            model=model,
            prompt_tokens=tokens,
            chunks=inputs,
            latency_s=latency_s,
        )

    async def embedding_of(
        self,
        tenant_id: str,
        model: str,
        texts: Sequence[str],
        tokens: Callable[[str], int],
        latency_s: float,
    ) -> None:
        """:meth:`embedding` of ``texts``, their tokens counted with ``tokens``. A meter that
        writes later may count them later too, off the request (see the retrieval service's
        ``DeferredUsageMeter``)."""
        await self.embedding(
            tenant_id, model, sum(tokens(t) for t in texts), latency_s, inputs=len(texts)
        )

    async def document(
        self, tenant_id: str, model: str, size_bytes: int, chunks: int, latency_s: float
    ) -> None:
        await self.record(
            tenant_id,
            kind="document",
            model=model,
            size_bytes=size_bytes,
            chunks=chunks,
            latency_s=latency_s,
        )


class MeteredLLM:
    """An :class:`~kubemate.inference.base.LLM` that records every call for one tenant.

    Cheap to make per request around a shared adapter; it does not own the adapter
    (:meth:`aclose` leaves it open)."""

    def __init__(self, llm: LLM, meter: UsageMeter, tenant_id: str) -> None:
        self._llm = llm
        self._meter = meter
        self._tenant = tenant_id
        self.model = llm.model

    async def kind(self) -> ModelKind:
        return await self._llm.kind()

    async def generate(self, prompt: Prompt, options: GenerateOptions) -> Completion:
        started = time.perf_counter()
        completion = await self._llm.generate(prompt, options)
        await self._meter.generation(self._tenant, completion, time.perf_counter() - started)
        return completion

    async def stream(self, prompt: Prompt, options: GenerateOptions) -> AsyncGenerator[str, None]:
        started = time.perf_counter()
        pieces: list[str] = []
        try:
            async for piece in self._llm.stream(prompt, options):
                pieces.append(piece)
                yield piece
        finally:
            # Streams carry no usage: count with the model's own tokenizer, also when the
            # client went away half-way (what was generated was paid for).
            completion = Completion(
                text="".join(pieces),
                model=self.model,
                prompt_tokens=self._llm.count_tokens(plain_text(prompt)),
                completion_tokens=self._llm.count_tokens("".join(pieces)) if pieces else 0,
            )
            with anyio.CancelScope(shield=True):
                await self._meter.generation(
                    self._tenant, completion, time.perf_counter() - started
                )

    def count_tokens(self, text: str) -> int:
        return self._llm.count_tokens(text)

    async def aclose(self) -> None:
        return None


class MeteredEmbedder:
    """An :class:`~kubemate.inference.base.Embedder` that records every call for one tenant.
    Embedders report no token counts, so tokens are counted with cl100k_base (an estimate)."""

    def __init__(
        self,
        embedder: Embedder,
        meter: UsageMeter,
        tenant_id: str,
        *,
        tokens: Callable[[str], int] = count_tokens,
    ) -> None:
        self._embedder = embedder
        self._meter = meter
        self._tenant = tenant_id
        self._tokens = tokens
        self.model = embedder.model

    @property
    def dimension(self) -> int:
        return self._embedder.dimension

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        started = time.perf_counter()
        vectors = await self._embedder.embed(texts)
        await self._meter.embedding_of(
            self._tenant, self.model, list(texts), self._tokens, time.perf_counter() - started
        )
        return vectors

    async def embed_query(self, text: str) -> list[float]:
        started = time.perf_counter()
        vector = await self._embedder.embed_query(text)
        await self.record_query(text, time.perf_counter() - started)
        return vector

    async def record_query(self, text: str, latency_s: float) -> None:
        """The usage row of one query embedding made without :meth:`embed_query` (a caller
        that ran the wrapped embedder's blocking encode in its own worker thread)."""
        await self._meter.embedding_of(self._tenant, self.model, [text], self._tokens, latency_s)

    @property
    def wrapped(self) -> Embedder:
        return self._embedder

    async def aclose(self) -> None:
        return None


# ---- the ledger as Prometheus counters -----------------------------------------------------------


class UsageCollector:
    """Exports the usage ledger's totals per tenant, model and kind at scrape time.

    The totals are one grouped query over the table, cached for ``ttl_s`` so frequent scrapes
    cost one query per window. Tenants are bounded by contract, so the label set stays small.
    """

    def __init__(self, ttl_s: float = 15.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._store: MetadataStore | None = None
        self._ttl_s = ttl_s
        self._clock = clock
        self._cached: tuple[float, list[tuple[str, UsageTotals]]] | None = None
        self._lock = threading.Lock()

    def attach(self, store: MetadataStore | None) -> None:
        with self._lock:
            self._store = store
            self._cached = None

    def _rows(self) -> list[tuple[str, UsageTotals]]:
        with self._lock:
            store = self._store
            if store is None:
                return []
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._ttl_s:
                return self._cached[1]
            try:
                rows = store.usage.totals_per_tenant()
            except ServiceError as exc:
                log.warning("usage.metrics_query_failed", error=type(exc).__name__)
                return self._cached[1] if self._cached else []
            self._cached = (now, rows)
            return rows

    def describe(self) -> Iterator[Metric]:
        # Declared empty, so registering does not run the query (prometheus_client calls
        # collect() at registration when describe() is missing).
        return iter(())

    def collect(self) -> Iterator[Metric]:
        tokens = CounterMetricFamily(
            "kubemate_tokens",
            "Tokens used, from the usage ledger (kind: prompt or completion)",
            labels=["tenant", "model", "kind"],
        )
        requests = CounterMetricFamily(
            "kubemate_usage_requests",
            "Metered calls and documents (kind: generate, embed, document)",
            labels=["tenant", "model", "kind"],
        )
        size = CounterMetricFamily(
            "kubemate_usage_document_bytes",
            "Bytes of processed documents",
            labels=["tenant", "model"],
        )
        chunks = CounterMetricFamily(
            "kubemate_usage_document_chunks",
            "Chunks of processed documents",
            labels=["tenant", "model"],
        )
        latency = CounterMetricFamily(
            "kubemate_usage_latency_seconds",
            "Summed latency of metered calls (divide by kubemate_usage_requests_total)",
            labels=["tenant", "model", "kind"],
        )
        prompt_sum: dict[tuple[str, str], float] = {}
        completion_sum: dict[tuple[str, str], float] = {}
        for tenant, totals in self._rows():
            model, kind = totals.model, totals.kind
            key = (tenant, model)
            prompt_sum[key] = prompt_sum.get(key, 0) + float(totals.prompt_tokens)
            completion_sum[key] = completion_sum.get(key, 0) + float(totals.completion_tokens)
            requests.add_metric([tenant, model, kind], float(totals.requests))
            latency.add_metric([tenant, model, kind], totals.latency_ms_total / 1000)
            if kind == "document":
                size.add_metric([tenant, model], float(totals.bytes))
                chunks.add_metric([tenant, model], float(totals.chunks))
        for (tenant, model), value in prompt_sum.items():
            tokens.add_metric([tenant, model, "prompt"], value)
            tokens.add_metric([tenant, model, "completion"], completion_sum[(tenant, model)])
        yield from (tokens, requests, size, chunks, latency)


_COLLECTOR = UsageCollector()
_registered = False
_register_lock = threading.Lock()


def usage_collector(registry: CollectorRegistry = REGISTRY) -> UsageCollector:
    """The process's collector, registered once (apps may be built several times, in tests)."""
    global _registered
    with _register_lock:
        if not _registered:
            registry.register(_COLLECTOR)
            _registered = True
    return _COLLECTOR
