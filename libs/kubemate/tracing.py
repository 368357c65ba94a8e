"""OpenTelemetry traces: one tracer provider per process, started from a :class:`TracingConfig`.

A service calls :func:`start_tracing` once (``build_app`` does it for the HTTP services, the
worker's ``create_celery`` for the worker) and :func:`shutdown_tracing` when it stops. Started,
the process has:

* server spans for its FastAPI app (:func:`instrument_app`), without the probe and scrape paths;
* client spans for every httpx request, which also carry ``traceparent`` to the service called
  (the calls to Ollama and OpenAI), and for the gateway's hop to ingest, retrieval and model
  manager (its aiohttp client), through :func:`client_span`;
* the W3C trace context of a request written into the ingest stream entries it queues
  (:mod:`kubemate.queue.streams`), so the worker's span joins the upload's trace.

Disabled (the default), nothing here runs: no provider, no instrumentation, and spans made
through the OpenTelemetry API are non-recording no-ops.

Spans are exported in the background by a ``BatchSpanProcessor``: a collector that is slow or
down costs dropped spans and warnings in the log, never a failed or slower request.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from kubemate.logs import get_logger
from kubemate.settings import TracingConfig

if TYPE_CHECKING:
    from fastapi import FastAPI

log = get_logger(__name__)

# Probes and scrapes: every few seconds from Kubernetes and Prometheus, worth no trace.
UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics")
# Matched against the whole URL (scheme://host/path, no query) by the ASGI instrumentation.
_EXCLUDED_URLS = ",".join(f"^[^/]+//[^/]+{path}/?$" for path in UNTRACED_PATHS)
OTLP_TRACES_PATH = "/v1/traces"

_lock = threading.Lock()
_provider: TracerProvider | None = None


class _NoOrphanClientSpans(Sampler):
    """Drops a CLIENT span that starts a trace: an outgoing call outside any traced operation
    (the gateway's readiness probes of the services, polling loops) would otherwise make a
    one-span trace every few seconds. Calls inside a request or a document are kept."""

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoOrphanClientSpans{{{self._delegate.get_description()}}}"


def otlp_traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL: a base URL such as ``http://collector:4318`` gets
    ``/v1/traces``; a URL with a path is taken as given."""
    if urlsplit(endpoint).path.strip("/"):
        return endpoint
    return endpoint.rstrip("/") + OTLP_TRACES_PATH


def _one_line(span: ReadableSpan) -> str:
    # One JSON object per line, like the logs, so log collectors can parse console spans too.
    return str(span.to_json(indent=None)) + "\n"


def _exporter(config: TracingConfig) -> SpanExporter | None:
    if config.exporter == "otlp":
        # Imported here: the exporter pulls in requests and protobuf, which a service with
        # tracing off never needs.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=otlp_traces_url(config.otlp_endpoint), timeout=config.otlp_timeout_s
        )
    if config.exporter == "console":
        return ConsoleSpanExporter(formatter=_one_line)
    return None


def start_tracing(
    config: TracingConfig, *, service: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Start traces for this process; None when ``config.enabled`` is false.

    Idempotent: a process has one provider (OpenTelemetry's global one can be set only once),
    so a second call returns the first call's. ``exporter`` replaces the configured one (tests
    pass an in-memory exporter)."""
    global _provider
    if not config.enabled:
        return None
    with _lock:
        if _provider is not None:
            return _provider
        name = config.service_name or f"kubemate-{service}"
        # Resource.create also merges OTEL_RESOURCE_ATTRIBUTES, which is how Kubernetes adds
        # the pod and node names (downward API) without Kubemate knowing about them.
        provider = TracerProvider(
            resource=Resource.create({SERVICE_NAME: name}),
            sampler=ParentBased(root=_NoOrphanClientSpans(TraceIdRatioBased(config.sample_ratio))),
        )
        span_exporter = exporter or _exporter(config)
        if span_exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(span_exporter))
        trace.set_tracer_provider(provider)

        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        _provider = provider
    log.info(
        "tracing.started",
        service_name=name,
        exporter="custom" if exporter is not None else config.exporter,
        endpoint=otlp_traces_url(config.otlp_endpoint) if config.exporter == "otlp" else None,
        sample_ratio=config.sample_ratio,
    )
    return provider


def tracer_provider() -> TracerProvider | None:
    """The provider :func:`start_tracing` started, if any."""
    return _provider


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """Server spans for ``app``'s requests, except the probe and scrape paths."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls=_EXCLUDED_URLS,
        # Without this every ASGI message is a span of its own: one per chunk of a streamed
        # answer or of an SSE progress stream.
        exclude_spans=["receive", "send"],
    )


def shutdown_tracing() -> None:
    """Export what is buffered and stop; a no-op when tracing was not started. Bounded by the
    exporter's timeout when the collector is unreachable."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
        if provider is None:
            return
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().uninstrument()
    provider.shutdown()
    log.info("tracing.stopped")


@contextlib.contextmanager
def client_span(method: str, url: str) -> Iterator[tuple[trace.Span, dict[str, str]]]:
    """A CLIENT span around one call to another service, and the headers that carry it there
    (``traceparent``, ``tracestate``): for an HTTP client without its own instrumentation. With
    tracing off, a non-recording span and no headers, so a caller's own trace headers pass on."""
    if _provider is None:
        yield trace.INVALID_SPAN, {}
        return
    tracer = _provider.get_tracer("kubemate.http.client")
    attributes = {"http.request.method": method, "url.full": url}
    with tracer.start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield span, carrier


def trace_log_fields() -> Mapping[str, str]:
    """The current span's ids in the form the logs bind them (hex, as trace backends show
    them); empty outside a valid span, e.g. with tracing disabled."""
    span = trace.get_current_span()
    context = span.get_span_context()
    if not context.is_valid:
        return {}
    fields = {"trace_id": trace.format_trace_id(context.trace_id)}
    # A span that records nothing (tracing off here, the trace begun upstream) has only the
    # upstream's span id, which would point the log line at the wrong span.
    if span.is_recording():
        fields["span_id"] = trace.format_span_id(context.span_id)
    return fields
