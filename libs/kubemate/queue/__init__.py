"""The ingest work queue on Redis Streams: the stream is the record of what is still owed."""

from kubemate.queue.streams import IngestJob, IngestQueue, StreamEntry

__all__ = ["IngestJob", "IngestQueue", "StreamEntry"]
