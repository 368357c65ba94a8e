"""Traces (kubemate.tracing): off by default; when on, server spans for the app but not its
probes, and the W3C trace context carried through ingest stream entry fields. No network: the
spans go to the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.util._once import Once

from kubemate.http.app import ReadinessCheck, build_app
from kubemate.queue import INGEST_JOBS, IngestJob
from kubemate.queue.streams import TRACE_FIELDS, current_trace_fields
from kubemate.settings import KubemateSettings, TracingConfig
from kubemate.tracing import (
    otlp_traces_url,
    shutdown_tracing,
    start_tracing,
    trace_log_fields,
    tracer_provider,
)

ON = TracingConfig(enabled=True, exporter="none")
JOB = IngestJob("acme", "doc-1", "task-1", "default")


def reset_tracing() -> None:
    shutdown_tracing()
    # OpenTelemetry lets a process set its tracer provider once; opentelemetry-test-utils resets
    # the same private globals between tests.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    reset_tracing()
    yield InMemorySpanExporter()
    reset_tracing()


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    provider = tracer_provider()
    assert provider is not None
    provider.force_flush()
    return list(exporter.get_finished_spans())


def make_app(tracing: TracingConfig | None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    def readiness(_: FastAPI) -> ReadinessCheck:
        async def check() -> dict[str, str]:
            return {"redis": "ok"}

        return check

    app = build_app("svc", lifespan=lifespan, readiness=readiness, tracing=tracing)

    @app.get("/v1/ping")
    async def ping() -> dict[str, str]:
        return dict(trace_log_fields())

    return app


def test_tracing_is_off_by_default(spans: InMemorySpanExporter) -> None:
    config = KubemateSettings().tracing
    assert config.enabled is False
    assert start_tracing(config, service="svc") is None
    assert tracer_provider() is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry

    app = make_app(config)
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    with TestClient(app) as client:
        r = client.get("/v1/ping", headers={"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"})
    assert r.status_code == 200
    assert r.json() == {}  # no span, no trace ids in the logs
    assert "traceparent" not in r.headers
    with trace.get_tracer("t").start_as_current_span("upload"):
        assert current_trace_fields() == {}  # nothing written to stream entries


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEMATE_TRACING__ENABLED", "true")
    monkeypatch.setenv("KUBEMATE_TRACING__OTLP_ENDPOINT", "http://otel-collector:4318")
    monkeypatch.setenv("KUBEMATE_TRACING__SAMPLE_RATIO", "0.25")
    config = KubemateSettings().tracing
    assert config.enabled and config.exporter == "otlp" and config.sample_ratio == 0.25
    assert otlp_traces_url(config.otlp_endpoint) == "http://otel-collector:4318/v1/traces"
    assert otlp_traces_url("http://c:4318/") == "http://c:4318/v1/traces"
    assert otlp_traces_url("https://c.example/otlp/v1/traces") == "https://c.example/otlp/v1/traces"


def test_requests_are_traced_but_not_probes_and_scrapes(spans: InMemorySpanExporter) -> None:
    provider = start_tracing(ON, service="svc", exporter=spans)
    assert provider is not None
    # A second start (build_app's) keeps the first provider and its exporter.
    assert start_tracing(ON, service="svc") is provider
    with TestClient(make_app(ON)) as client:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200
        r = client.get("/v1/ping")
    assert r.status_code == 200 and r.headers["X-Request-Id"]

    (server,) = (s for s in finished(spans) if s.kind == SpanKind.SERVER)
    assert server.name == "GET /v1/ping"
    assert server.resource.attributes["service.name"] == "kubemate-svc"
    assert server.context is not None
    # The request's logs carry the ids of its server span.
    assert r.json()["trace_id"] == trace.format_trace_id(server.context.trace_id)
    # No span per ASGI message.
    assert [s.name for s in finished(spans)] == ["GET /v1/ping"]


def test_an_incoming_traceparent_is_continued(spans: InMemorySpanExporter) -> None:
    start_tracing(ON, service="svc", exporter=spans)
    upstream = f"00-{'a' * 32}-{'b' * 16}-01"
    with TestClient(make_app(ON)) as client:
        assert client.get("/v1/ping", headers={"traceparent": upstream}).status_code == 200
    (server,) = finished(spans)
    assert server.context is not None and server.parent is not None
    assert trace.format_trace_id(server.context.trace_id) == "a" * 32
    assert trace.format_span_id(server.parent.span_id) == "b" * 16


def test_traceparent_round_trips_through_stream_fields() -> None:
    provider = TracerProvider()  # not the global one: current spans need no global provider
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("upload") as upload:
        fields = {**INGEST_JOBS.encode(JOB), **current_trace_fields()}
    assert fields["traceparent"].startswith("00-")

    # As the worker reads it back from Redis: every field a str.
    job = INGEST_JOBS.decode(dict(fields))
    assert INGEST_JOBS.encode(job) == fields
    with tracer.start_as_current_span("process", context=job.trace_context()) as process:
        pass
    assert isinstance(process, ReadableSpan)
    assert process.get_span_context().trace_id == upload.get_span_context().trace_id
    assert process.parent is not None
    assert process.parent.span_id == upload.get_span_context().span_id


def test_untraced_entries_keep_their_fields() -> None:
    assert current_trace_fields() == {}  # no current span
    assert set(INGEST_JOBS.encode(JOB)) == {
        "tenant_id",
        "document_id",
        "task_id",
        "collection",
        "splitter",
    }
    # Entries written before the trace fields existed read as before.
    old = {"tenant_id": "acme", "document_id": "d", "task_id": "t", "collection": "default"}
    job = INGEST_JOBS.decode(old)
    assert job.traceparent == job.tracestate == ""
    assert not trace.get_current_span(job.trace_context()).get_span_context().is_valid
    # A malformed traceparent (someone else's writer) is ignored, not an error.
    garbled = INGEST_JOBS.decode({**old, "traceparent": "00-not-a-trace"})
    assert not trace.get_current_span(garbled.trace_context()).get_span_context().is_valid
    assert INGEST_JOBS.encode(garbled)["traceparent"] == "00-not-a-trace"  # kept as it came
    assert [name for name in TRACE_FIELDS if name in INGEST_JOBS.encode(garbled)] == ["traceparent"]


def test_outgoing_calls_outside_any_trace_are_not_sampled(spans: InMemorySpanExporter) -> None:
    start_tracing(ON, service="svc", exporter=spans)
    tracer = trace.get_tracer("test")
    # E.g. the gateway's readiness probes of the services: not worth a trace each.
    with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as orphan:
        assert not orphan.is_recording()
    with (
        tracer.start_as_current_span("POST /v1/documents", kind=SpanKind.SERVER),
        tracer.start_as_current_span("POST", kind=SpanKind.CLIENT) as call,
    ):
        assert call.is_recording()
    assert [s.name for s in finished(spans)] == ["POST", "POST /v1/documents"]


def test_sample_ratio_zero_keeps_no_new_trace(spans: InMemorySpanExporter) -> None:
    start_tracing(TracingConfig(enabled=True, exporter="none", sample_ratio=0), service="svc")
    with trace.get_tracer("test").start_as_current_span("upload") as span:
        assert not span.is_recording()
        # Still propagated, marked not sampled, so the services downstream agree.
        flags = current_trace_fields()["traceparent"].rsplit("-", 1)[1]
        assert int(flags, 16) & 0x01 == 0


def test_shutdown_undoes_the_httpx_instrumentation(spans: InMemorySpanExporter) -> None:
    start_tracing(ON, service="svc", exporter=spans)
    assert HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    shutdown_tracing()
    assert tracer_provider() is None
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    shutdown_tracing()  # a second call is a no-op
