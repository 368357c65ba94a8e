"""Prometheus metrics, declared once for every service (each process exports its own /metrics).

Labels stay low-cardinality: tenants are bounded by contract, document ids never become labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RAG_REQUESTS = Counter("rag_requests_total", "Answered chat/query requests", ["model", "tenant"])
RAG_REQUEST_DURATION = Histogram(
    "rag_request_duration_seconds",
    "End-to-end duration of chat/query requests",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
VECTOR_SEARCH_DURATION = Histogram(
    "vector_search_duration_seconds",
    "Duration of one vector search",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DOCUMENT_PROCESSING_STATUS = Counter(
    "document_processing_status_total",
    "Documents reaching a processing state",
    ["status"],
)
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests by route and status", ["service", "route", "status"]
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds", "HTTP request duration by route", ["service", "route"]
)
EMBEDDED_CHUNKS = Counter("embedded_chunks_total", "Chunks embedded", ["model"])
