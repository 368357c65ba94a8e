"""Prometheus metrics, declared once for every service (each process exports its own /metrics).

Labels stay low-cardinality: tenants are bounded by contract, document ids never become labels
of these counters (the ingest service's dead-letter gauges name the few failed documents an
alert must name, and bound their number).
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import Counter, Histogram

RagOutcome = Literal["answered", "cache_hit", "cannot_answer"]
"""How a chat request was answered: by the LLM from retrieved chunks, from the answer cache, or
with the fixed "cannot answer" text (nothing to ground an answer on, or the model said so)."""

RAG_REQUESTS = Counter(
    "rag_requests_total", "Chat requests by how they were answered", ["model", "tenant", "outcome"]
)
RAG_REQUEST_DURATION = Histogram(
    "rag_request_duration_seconds",
    # status: the HTTP status, or the status of the error event that ended a stream after its 200
    "End-to-end duration of chat/query requests (streams until their last event), by status",
    ["endpoint", "status"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
VECTOR_SEARCH_DURATION = Histogram(
    "vector_search_duration_seconds",
    "Duration of one vector search",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DOCUMENT_PROCESSING_STATUS = Counter(
    "document_processing_status_total",
    "Documents reaching a processing state, per tenant",
    ["status", "tenant"],
)
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route and status", ["service", "route", "status"]
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds", "HTTP request duration by route", ["service", "route"]
)
EMBEDDED_CHUNKS = Counter("embedded_chunks_total", "Chunks embedded", ["model"])
REINDEXED_DOCUMENTS = Counter(
    "reindexed_documents_total",
    # how: "copied" (rows of the same embedder's collection, no embedding) or "reembedded"
    "Documents brought into a re-index's vector collection, by how",
    ["how"],
)


def count_rag_request(*, model: str, tenant_id: str, outcome: RagOutcome) -> None:
    """One chat request answered, and how (``rag_requests_total``)."""
    RAG_REQUESTS.labels(model, tenant_id, outcome).inc()
