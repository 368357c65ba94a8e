"""The Celery tasks. Thin: they take ids and call the domain (processing, fanout).

A document task carries only its stream entry's id: the entry itself is held by this worker's
:class:`~kubemate_worker.inflight.InFlight`, where the dispatcher put it when it read it.

Both are acknowledged to Celery on receipt: the Redis stream, not Celery, is the record of what
is owed. A document task lost with its worker is redone through the stream (its entry is
reclaimed after the idle timeout); a fan-out unit lost with its helper is taken back by the
document's owner once the helper's claim expires.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from celery import Celery

from kubemate_worker.context import WorkerContext

PROCESS_DOCUMENT = "kubemate.process_document"
EMBED_UNIT = "kubemate.embed_unit"


def register_tasks(app: Celery, ctx_getter: Callable[[], WorkerContext]) -> None:
    # Imported here: the domain modules build on the context, which the app builds lazily.
    from kubemate_worker.fanout import help_with_unit
    from kubemate_worker.processing import process_entry

    @app.task(name=PROCESS_DOCUMENT, acks_late=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def process_document(entry_id: str, **_sent_before_upgrade: object) -> str:
        # (A message sent by an older worker also carries the job: the held entry is the truth.)
        with structlog.contextvars.bound_contextvars(entry_id=entry_id):
            return str(process_entry(ctx_getter(), entry_id))

    @app.task(name=EMBED_UNIT, acks_late=False, ignore_result=True)  # type: ignore[untyped-decorator]
    def embed_unit(key: str) -> str:
        with structlog.contextvars.bound_contextvars(unit=key):
            return help_with_unit(ctx_getter(), key)
