"""The retrieval service's usage rows: written after the call that made them, all of them, with
the same figures a direct write would have (tokens counted by the writer, not the caller)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from kubemate.metadata.usage import UsageRow
from kubemate.metering import MeteredEmbedder
from kubemate_retrieval.metering import DeferredUsageMeter
from kubemate_retrieval.timing import Timer


class _Ledger:
    """In the metadata store's place: ``store.usage.add`` writes a row."""

    def __init__(self, *, fail: bool = False) -> None:
        self.rows: list[dict[str, Any]] = []
        self.fail = fail
        self.usage = self

    def add(self, tenant_id: str, row: UsageRow) -> None:
        if self.fail:
            raise RuntimeError("ledger down")
        self.rows.append({"tenant_id": tenant_id, **asdict(row)})


class _Embedder:
    model = "fake"
    dimension = 2

    async def embed(self, texts: Any) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]

    async def embed_query(self, text: str) -> list[float]:
        return [1.0, 0.0]

    async def aclose(self) -> None:
        return None


def test_rows_are_written_after_the_call_returns_and_drained_at_shutdown() -> None:
    ledger = _Ledger()
    meter = DeferredUsageMeter(ledger)  # type: ignore[arg-type]
    counted: list[str] = []

    def tokens(text: str) -> int:
        counted.append(text)
        return len(text.split())

    async def scenario() -> None:
        embedder = MeteredEmbedder(_Embedder(), meter, "acme", tokens=tokens)
        await embedder.embed_query("three word question")
        await embedder.embed(["a b", "c"])
        await meter.record("acme", kind="generate", model="llm", prompt_tokens=5)
        # Queued, not yet written or even counted: the caller did not wait for either.
        assert ledger.rows == [] and counted == [] and meter.pending == 3
        await meter.drain()
        assert meter.pending == 0

    asyncio.run(scenario())
    assert [(r["kind"], r["prompt_tokens"], r["chunks"]) for r in ledger.rows] == [
        ("embed", 3, 1),
        ("embed", 3, 2),
        ("generate", 5, 0),
    ]
    assert {r["tenant_id"] for r in ledger.rows} == {"acme"}


def test_a_failing_ledger_fails_no_call_and_stops_no_later_row() -> None:
    ledger = _Ledger(fail=True)
    meter = DeferredUsageMeter(ledger)  # type: ignore[arg-type]

    async def scenario() -> None:
        await meter.record("acme", kind="embed", model="m", prompt_tokens=1)
        await meter.drain()
        ledger.fail = False
        await meter.record("acme", kind="embed", model="m", prompt_tokens=2)
        await meter.drain()

    asyncio.run(scenario())
    assert [r["prompt_tokens"] for r in ledger.rows] == [2]


def test_past_max_pending_a_call_writes_its_own_row() -> None:
    ledger = _Ledger()
    meter = DeferredUsageMeter(ledger, max_pending=1)  # type: ignore[arg-type]

    async def scenario() -> None:
        await meter.record("acme", kind="embed", model="m", prompt_tokens=1)
        await meter.record("acme", kind="embed", model="m", prompt_tokens=2)
        assert 2 in [r["prompt_tokens"] for r in ledger.rows]  # written before returning
        await meter.drain()

    asyncio.run(scenario())
    assert sorted(r["prompt_tokens"] for r in ledger.rows) == [1, 2]


def test_stages_timed_in_a_worker_thread_add_up_with_the_others() -> None:
    timer = Timer()
    timer.add("embed", 0.012)
    timer.add("embed", 0.003)
    with timer.stage("search"):
        pass
    timings = timer.total()
    assert timings["embed"] == 15.0
    assert set(timings) == {"embed", "search", "total"}
