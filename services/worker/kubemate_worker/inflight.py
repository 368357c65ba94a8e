"""What this worker process holds right now: stream entries read and not yet finished.

The dispatcher registers an entry when it reads it and hands only its id to Celery; the task
finds the entry here, marks it started and removes it when done. A lease keeper heart-beats
every registered entry, and learns from Redis when one was taken over by another consumer (this
worker stalled past the idle timeout): the task working on it then stops at its next check
instead of finishing it twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubemate.queue import IngestJob, Lease, LeaseLost


@dataclass
class Held:
    entry_id: str
    job: IngestJob
    read_at: float = field(default_factory=time.monotonic)
    started: bool = False
    _lost: threading.Event = field(default_factory=threading.Event)

    def mark_lost(self) -> None:
        self._lost.set()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def wait_lost(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early if the entry is lost."""
        return self._lost.wait(timeout)

    def check(self) -> None:
        """Raise :class:`LeaseLost` if the lease keeper found the entry taken over."""
        if self._lost.is_set():
            raise LeaseLost(self.entry_id)


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Notified whenever an entry is forgotten, so the dispatcher reads the next one at once:
        # a document's slot left empty for a polling interval leaves the embedder short of work
        # (its next batch waits for documents that are not read yet).
        self._room = threading.Condition(self._lock)
        self._held: dict[str, Held] = {}

    def add(self, entry_id: str, job: IngestJob) -> Held | None:
        """Register a newly read entry; None if it is held here already (reclaimed from
        ourselves after missed heartbeats): it must not be dispatched twice."""
        with self._lock:
            if entry_id in self._held:
                return None
            held = self._held[entry_id] = Held(entry_id, job)
            return held

    def start(self, entry_id: str) -> Held | None:
        """The task begins: None if the entry is not (or no longer) held by this process."""
        with self._lock:
            held = self._held.get(entry_id)
            if held is None or held.lost:
                return None
            held.started = True
            return held

    def finish(self, entry_id: str) -> None:
        with self._lock:
            if self._held.pop(entry_id, None) is not None:
                self._room.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def wait_for_room(self, limit: int, timeout: float) -> int:
        """Block until fewer than ``limit`` entries are held, or ``timeout`` seconds passed;
        returns how many more may be taken (0 on timeout)."""
        with self._lock:
            self._room.wait_for(lambda: len(self._held) < limit, timeout)
            return max(0, limit - len(self._held))

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._held)

    def apply(self, leases: dict[str, Lease]) -> list[str]:
        """Record the lease keeper's findings; returns the ids this process lost."""
        lost = []
        with self._lock:
            for entry_id, lease in leases.items():
                held = self._held.get(entry_id)
                if held is None or lease == Lease.HELD:
                    continue
                held.mark_lost()
                lost.append(entry_id)
                if not held.started:
                    del self._held[entry_id]
            if lost:
                self._room.notify_all()
        return lost

    def release_unstarted(self, older_than_s: float) -> list[str]:
        """Forget entries whose task never began (a lost Celery message): without heartbeats
        they become idle and are reclaimed through the stream."""
        now = time.monotonic()
        with self._lock:
            stale = [
                eid
                for eid, held in self._held.items()
                if not held.started and now - held.read_at > older_than_s
            ]
            for eid in stale:
                self._held.pop(eid).mark_lost()
            if stale:
                self._room.notify_all()
        return stale


class BackendGate:
    """Remembers which backends are failing, so the dispatcher starts no new documents that
    would only fail too.

    A backend with a probe (a cheap call such as Milvus's version; the operation's prefix up to
    the first dot names it) is failing until a call or the probe succeeds: while it is, new
    documents wait in the stream, however long the outage lasts. A failure without a probe is
    forgotten ``hold_s`` after it was last reported (retries report it again while they go on);
    meanwhile a worker has one document in flight at a time, which probes with its retries.
    """

    def __init__(self, hold_s: float, probes: dict[str, Callable[[], object]] | None = None):
        self._hold_s = hold_s
        self._probes = dict(probes or {})
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[float, str]] = {}

    def failed(self, operation: str, reason: str) -> None:
        with self._lock:
            self._failing[operation] = (time.monotonic(), reason)

    def recovered(self, operation: str) -> None:
        with self._lock:
            self._failing.pop(operation, None)

    def _probe_for(self, operation: str) -> Callable[[], object] | None:
        return self._probes.get(operation.split(".", 1)[0])

    def reasons(self) -> dict[str, str]:
        cutoff = time.monotonic() - self._hold_s
        with self._lock:
            for operation, (seen, _) in list(self._failing.items()):
                if seen < cutoff and self._probe_for(operation) is None:
                    del self._failing[operation]
            return {operation: reason for operation, (_, reason) in self._failing.items()}

    @property
    def degraded(self) -> bool:
        return bool(self.reasons())

    def probe(self) -> bool:
        """Try the probes of the failing backends; True while one of them still fails (no
        new document should start then)."""
        down = False
        for operation in self.reasons():
            probe = self._probe_for(operation)
            if probe is None:
                continue
            try:
                probe()
            except Exception:
                down = True
                continue
            self.recovered(operation)
        return down
