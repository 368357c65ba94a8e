"""Milliseconds per pipeline stage, reported in every response."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


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
            # A stage that runs twice (two searches) reports its total.
            elapsed = (time.perf_counter() - started) * 1000
            self.timings[name] = round(self.timings.get(name, 0.0) + elapsed, 3)

    def add(self, name: str, elapsed_s: float) -> None:
        """A stage timed elsewhere (in a worker thread), in seconds."""
        self.timings[name] = round(self.timings.get(name, 0.0) + elapsed_s * 1000, 3)

    def total(self) -> dict[str, float]:
        """The stages so far plus ``total``, the time since the timer was made."""
        return {**self.timings, "total": round((time.perf_counter() - self._started) * 1000, 3)}
