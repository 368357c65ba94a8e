"""Fan-out: other workers embed and write units of a big document alongside its owner.

The owner (the worker holding the document's stream entry) keeps splitting. Past
``fanout_min_chunks`` it offers up to ``fanout_outstanding`` units at a time: the unit's chunks
go into a Redis key and a Celery task naming the key goes to the shared units queue. A helper
that picks the task claims the unit (SET NX with a TTL it keeps refreshing), embeds and writes
it, and marks it done. The owner embeds everything else itself and, at the end, takes back every
unit nobody claimed and every unit whose helper's claim expired (a dead helper), so a document
never waits on a worker that is not there, and with one worker it simply does all the work.

Safe to repeat: a unit's rows have deterministic ids, and the owner records the positions in the
chunk ledger before offering them, so a unit written twice (a helper thought dead that was only
slow) or written by a helper of a run that was abandoned leaves nothing unknown behind.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import redis

from kubemate.logs import get_logger
from kubemate.text.split import Chunk
from kubemate_worker.writing import Target, embed_all

if TYPE_CHECKING:
    from kubemate_worker.context import WorkerContext
    from kubemate_worker.inflight import Held

log = get_logger(__name__)

UNIT_TTL_S = 3600  # an unclaimed unit of a vanished owner expires
_POLL_S = 0.2


def units_queue(stream: str) -> str:
    return f"{stream}:units"


def _claim_key(key: str) -> str:
    return key + ":claim"


def _done_key(key: str) -> str:
    return key + ":done"


class FanOut:
    """The owner's side, for one document. Redis failures make it stop offering and do the
    work itself, never fail the document."""

    def __init__(self, ctx: WorkerContext, target: Target, held: Held) -> None:
        self._ctx = ctx
        self._r: redis.Redis = ctx.queue.client
        self._target = target
        self._held = held
        self._outstanding: dict[str, list[Chunk]] = {}
        self._ttl_ms = int(ctx.settings.worker.fanout_claim_ttl_s * 1000)
        self._helped = 0
        self._broken = False
        self.offered_chunks = 0

    @classmethod
    def for_document(cls, ctx: WorkerContext, target: Target, held: Held) -> FanOut | None:
        return cls(ctx, target, held) if ctx.offer_unit is not None else None

    def _key(self, unit: list[Chunk]) -> str:
        t = self._target
        return f"{self._ctx.queue.stream}:unit:{t.task_id}:{t.version}:{unit[0].position}"

    def can_offer(self) -> bool:
        if self._broken:
            return False
        self.collect()
        return len(self._outstanding) < self._ctx.settings.worker.fanout_outstanding

    def offer(self, unit: list[Chunk]) -> None:
        assert self._ctx.offer_unit is not None
        key = self._key(unit)
        payload = {
            "target": asdict(self._target),
            "chunks": [[c.position, c.text, c.page, c.title] for c in unit],
        }
        try:
            self._r.set(key, json.dumps(payload), ex=UNIT_TTL_S)
            self._ctx.offer_unit(key)
        except Exception as exc:
            # Celery's or Redis's trouble: the unit stays ours and is taken back at the end.
            log.warning("fanout.offer_failed", error=str(exc))
            self._broken = True
        self._outstanding[key] = unit
        self.offered_chunks += len(unit)

    def collect(self) -> int:
        """Chunks written by helpers so far (units marked done are forgotten here)."""
        if not self._outstanding:
            return self._helped
        keys = list(self._outstanding)
        try:
            done = self._r.mget([_done_key(k) for k in keys])
        except redis.RedisError:
            return self._helped
        for key, mark in zip(keys, done, strict=True):
            if mark is not None:
                self._helped += len(self._outstanding.pop(key))
                log.info("fanout.unit_helped", unit=key, helper=str(mark))
        return self._helped

    def _take_back(self, key: str) -> bool:
        try:
            return bool(self._r.set(_claim_key(key), self._ctx.consumer, nx=True, px=self._ttl_ms))
        except redis.RedisError:
            return True  # nobody can tell us otherwise: doing it twice is harmless

    def _mark_done(self, key: str) -> None:
        try:
            pipe = self._r.pipeline(transaction=True)
            pipe.set(_done_key(key), self._ctx.consumer, ex=UNIT_TTL_S)
            pipe.delete(key, _claim_key(key))
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("fanout.mark_failed", unit=key, error=str(exc))

    def finish(self, process: Callable[[list[Chunk]], None], on_wait: Callable[[int], None]) -> int:
        """Wait for the offered units, doing those nobody does; returns how many chunks were
        offered (all written now, by helpers or by ``process``)."""
        while self._outstanding:
            self._held.check()
            self.collect()
            took = False
            for key in list(self._outstanding):
                if self._take_back(key):
                    unit = self._outstanding[key]
                    process(unit)
                    self._mark_done(key)
                    del self._outstanding[key]
                    took = True
                    log.info("fanout.unit_taken_back", unit=key)
            if self._outstanding and not took:
                on_wait(self._helped)
                time.sleep(_POLL_S)
        return self.offered_chunks


def help_with_unit(ctx: WorkerContext, key: str) -> str:
    """The helper's side: embed and write the unit at ``key`` unless someone else does."""
    r: redis.Redis = ctx.queue.client
    ttl_ms = int(ctx.settings.worker.fanout_claim_ttl_s * 1000)
    try:
        if not r.set(_claim_key(key), ctx.consumer, nx=True, px=ttl_ms):
            return "taken"
        raw = r.get(key)
        if raw is None:
            r.delete(_claim_key(key))
            return "gone"
    except redis.RedisError as exc:
        log.warning("fanout.claim_failed", unit=key, error=str(exc))
        return "skipped"
    payload: dict[str, Any] = json.loads(raw)
    target = Target(**payload["target"])
    scope = ctx.scope(target.tenant_id)  # its embedder for the collection, metered for it
    unit = [Chunk(position=p, text=t, page=g, title=h) for p, t, g, h in payload["chunks"]]
    try:
        service = ctx.embed_service(scope, target.collection)
        # One try each: on any trouble the owner takes the unit back and retries it with its
        # own budget, so a helper never holds a unit while it waits.
        vectors = ctx.run(embed_all(service, [c.text for c in unit]))
        r.pexpire(_claim_key(key), ttl_ms)
        ctx.loaded.ensure(target.collection, target.vector_collection, len(vectors[0]))
        ctx.upserts.upsert(target.vector_collection, target.records(unit, vectors))
        pipe = r.pipeline(transaction=True)
        pipe.set(_done_key(key), ctx.consumer, ex=UNIT_TTL_S)
        pipe.delete(key, _claim_key(key))
        pipe.execute()
    except Exception as exc:
        log.warning("fanout.unit_released", unit=key, error=str(exc))
        with contextlib.suppress(redis.RedisError):  # else the claim expires on its own
            r.delete(_claim_key(key))
        return "released"
    ctx.flush_usage(scope)
    log.info("fanout.unit_done", unit=key, chunks=len(unit), document_id=target.document_id)
    return "done"
