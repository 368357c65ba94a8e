"""Milliseconds per pipeline stage, reported in every response and observed by Prometheus.

Each stage's time also lands in ``retrieval_stage_duration_seconds{stage}``, so an operator can
see which stage a slow query spends its time in (the rerank's model lookup or load against its
scoring, the search against the embedding) without reading responses. Stage names are the fixed
strings of this service's code: a bounded label.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Histogram

STAGE_DURATION = Histogram(
    "retrieval_stage_duration_seconds",
    "Duration of one stage of a query or chat request (embed, search, rerank_score, ...)",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


class Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._started = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, elapsed_s: float) -> None:
        """A stage's seconds (timed here or elsewhere, e.g. in a worker thread). A stage that
        runs twice (two searches) reports its total, and is observed twice."""
        STAGE_DURATION.labels(name).observe(elapsed_s)
        self.timings[name] = round(self.timings.get(name, 0.0) + elapsed_s * 1000, 3)

    def total(self) -> dict[str, float]:
        """The stages so far plus ``total``, the time since the timer was made."""
        return {**self.timings, "total": round((time.perf_counter() - self._started) * 1000, 3)}
