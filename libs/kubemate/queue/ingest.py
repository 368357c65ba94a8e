"""The ingest stream: one entry per document to process, written by the ingest service, read by
the workers.

Wire format (all strings): ``tenant_id, document_id, task_id, collection``; ``splitter`` (the
upload's splitter choice as SplitterSpec JSON, "" for the worker's settings); ``traceparent``
and ``tracestate`` only when the request that queued it was traced. Entries written before a
field existed read with its default.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from opentelemetry.context import Context

from kubemate.queue.streams import (
    TRACE_FIELDS,
    FieldsCodec,
    StreamEntry,
    StreamQueue,
    extract_trace_context,
)
from kubemate.settings import RedisConfig


@dataclass(frozen=True, slots=True)
class IngestJob:
    tenant_id: str
    document_id: str
    task_id: str
    collection: str
    # The upload's splitter choice as SplitterSpec JSON (kubemate.text.split.build_splitter);
    # "" means the worker's settings. Optional, so entries written before it still read.
    splitter: str = ""
    # The W3C trace context of the request that queued the job; "" when it was not traced.
    traceparent: str = ""
    tracestate: str = ""

    def trace_context(self) -> Context:
        """The context to parent the job's processing span from (empty when untraced)."""
        return extract_trace_context(
            {"traceparent": self.traceparent, "tracestate": self.tracestate}
        )


# Trace fields are written only when set: untraced entries stay as they were before tracing.
INGEST_JOBS = FieldsCodec(IngestJob, omit_empty=TRACE_FIELDS)

IngestEntry = StreamEntry[IngestJob]


class IngestQueue(StreamQueue[IngestJob]):
    """The ingest stream (``redis.ingest_stream``) and its consumer group; entries carry the
    queuing request's trace."""

    def __init__(
        self, client: redis.Redis, config: RedisConfig, *, claim_idle_ms: int = 60_000
    ) -> None:
        super().__init__(
            client,
            INGEST_JOBS,
            stream=config.ingest_stream,
            group=config.consumer_group,
            claim_idle_ms=claim_idle_ms,
            traced=True,
        )

    @classmethod
    def from_config(cls, config: RedisConfig, **kwargs: int) -> IngestQueue:
        return cls(redis.Redis.from_url(config.url, decode_responses=True), config, **kwargs)
