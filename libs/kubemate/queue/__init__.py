"""Work queues on Redis Streams: a stream is the record of what is still owed.

:class:`StreamQueue` is the stream with its consumer group, whatever it carries; a codec per
kind of message says how its entries are written and read (:mod:`kubemate.queue.ingest`,
:mod:`kubemate.queue.reindex`).
"""

from kubemate.queue.ingest import INGEST_JOBS, IngestEntry, IngestJob, IngestQueue
from kubemate.queue.lease import Lease, LeaseLost
from kubemate.queue.streams import EntryCodec, StreamEntry, StreamQueue

__all__ = [
    "INGEST_JOBS",
    "EntryCodec",
    "IngestEntry",
    "IngestJob",
    "IngestQueue",
    "Lease",
    "LeaseLost",
    "StreamEntry",
    "StreamQueue",
]
