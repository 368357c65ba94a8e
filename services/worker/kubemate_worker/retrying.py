"""Backend calls of the worker, retried through the one retry helper (:mod:`kubemate.retry`).

A retryable failure (:class:`~kubemate.errors.BackendUnavailable`: Milvus, Redis, the database
or an embedding runtime not answering, a 429 with its Retry-After) is retried with exponential
backoff and full jitter; the task shows ``retrying: <reason>`` meanwhile, and the dispatcher's
gate hears about it. When the budget is spent, :class:`BackendGaveUp` carries a reason a user
can read, and the document fails with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from kubemate.errors import BackendUnavailable, ServiceError
from kubemate.logs import get_logger
from kubemate.retry import RetryPolicy, backoff_delay, retry_sync
from kubemate_worker.inflight import BackendGate

T = TypeVar("T")

log = get_logger(__name__)


# Where outcomes are recorded: the stream (Redis) and the metadata database. Failing a document
# because one of them is down cannot even be recorded, so their outages are waited out with a
# longer budget; the entry stays owed in the stream meanwhile.
RECORDING_BACKENDS = frozenset({"stream", "ledger", "metadata"})


class BackendGaveUp(ServiceError):
    """A backend stayed unavailable for the whole retry budget."""

    type_slug = "backend-gave-up"
    title = "A backend stayed unavailable"
    status = 503

    @property
    def records_outcomes(self) -> bool:
        """The backend that failed is where outcomes are recorded (Redis, the database)."""
        operation = str(self.extra.get("operation", ""))
        return operation.split(".", 1)[0] in RECORDING_BACKENDS


def _quiet(_reason: str) -> None:
    return None


class Retrier:
    def __init__(
        self,
        policy: RetryPolicy,
        gate: BackendGate,
        patient: RetryPolicy,
        on_failure: Callable[[str], None] = lambda _operation: None,
    ) -> None:
        self.policy = policy
        self.patient = patient
        self.gate = gate
        self._on_failure = on_failure

    def policy_for(self, operation: str) -> RetryPolicy:
        backend = operation.split(".", 1)[0]
        return self.patient if backend in RECORDING_BACKENDS else self.policy

    def call(
        self,
        operation: str,
        fn: Callable[[], T],
        *,
        on_retry: Callable[[str], None] = _quiet,
        policy: RetryPolicy | None = None,
    ) -> T:
        """``fn()`` with retries; :class:`BackendGaveUp` once they are spent."""
        policy = policy or self.policy_for(operation)
        tries = 0
        started = time.monotonic()

        def attempt() -> T:
            nonlocal tries
            tries += 1
            try:
                result = fn()
            except BackendUnavailable as exc:
                self.gate.failed(operation, exc.detail)
                self._on_failure(operation)
                if tries < policy.max_attempts:
                    try:
                        on_retry(exc.detail)
                    except Exception as report_error:  # reporting must not end the retries
                        log.warning("retry.report_failed", error=str(report_error))
                raise
            if tries > 1:
                log.info("retry.recovered", operation=operation, tries=tries)
            self.gate.recovered(operation)
            return result

        try:
            # The first try goes straight through: most calls succeed, and building the retry
            # machinery for each of a document's dozen backend calls shows in profiles.
            try:
                return attempt()
            except BackendUnavailable as exc:
                if policy.max_attempts == 1:
                    raise
                time.sleep(
                    backoff_delay(1, exc, base_delay=policy.base_delay, max_delay=policy.max_delay)
                )
            # The rest on the same schedule: their first wait is the original second one.
            rest = replace(
                policy, max_attempts=policy.max_attempts - 1, base_delay=policy.base_delay * 2
            )
            return retry_sync(attempt, policy=rest, operation=operation)
        except BackendUnavailable as exc:
            elapsed = time.monotonic() - started
            raise BackendGaveUp(
                f"{exc.detail} (gave up after {tries} tries over {elapsed:.0f} s)",
                operation=operation,
            ) from exc
