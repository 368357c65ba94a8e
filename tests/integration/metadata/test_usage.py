"""The usage ledger on SQLite and PostgreSQL: rows and their totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubemate.metadata import MetadataStore

pytestmark = pytest.mark.integration


def test_usage_totals_group_by_kind_and_model(
    store: MetadataStore, tenant: str, other_tenant: str
) -> None:
    store.usage.record(
        tenant, kind="generate", model="gemma", prompt_tokens=10, completion_tokens=5, latency_ms=20
    )
    store.usage.record(
        tenant, kind="generate", model="gemma", prompt_tokens=1, completion_tokens=2, latency_ms=40
    )
    store.usage.record(tenant, kind="generate", model="llama", prompt_tokens=7)
    store.usage.record(tenant, kind="embed", model="minilm", chunks=30, latency_ms=5.5)
    store.usage.record(tenant, kind="document", model="-", bytes=5_000_000_000, chunks=12)
    store.usage.record(other_tenant, kind="generate", model="gemma", prompt_tokens=1000)

    totals = {(t.kind, t.model): t for t in store.usage.totals(tenant)}
    assert list(totals) == [
        ("document", "-"),
        ("embed", "minilm"),
        ("generate", "gemma"),
        ("generate", "llama"),
    ]
    gemma = totals["generate", "gemma"]
    assert (gemma.requests, gemma.prompt_tokens, gemma.completion_tokens) == (2, 11, 7)
    assert gemma.latency_ms_total == pytest.approx(60.0)
    assert gemma.latency_ms_avg == pytest.approx(30.0)
    assert totals["document", "-"].bytes == 5_000_000_000  # needs the BIGINT column
    assert totals["embed", "minilm"].chunks == 30

    now = datetime.now(UTC)
    assert store.usage.totals(tenant, since=now + timedelta(minutes=1)) == []
    assert store.usage.totals(tenant, until=now - timedelta(minutes=1)) == []
    window = store.usage.totals(
        tenant, since=now - timedelta(minutes=1), until=now + timedelta(minutes=1)
    )
    assert len(window) == 4
    assert [t.prompt_tokens for t in store.usage.totals(other_tenant)] == [1000]


def test_usage_rejects_unknown_kind(store: MetadataStore, tenant: str) -> None:
    with pytest.raises(ValueError, match="usage kind"):
        store.usage.record(tenant, kind="chat", model="x")  # type: ignore[arg-type]


def test_totals_per_tenant_are_each_tenants_totals(
    store: MetadataStore, tenant: str, other_tenant: str
) -> None:
    store.usage.record(tenant, kind="generate", model="gemma", prompt_tokens=3, latency_ms=2.5)
    store.usage.record(tenant, kind="generate", model="gemma", completion_tokens=4)
    store.usage.record(tenant, kind="document", model="minilm", bytes=10, chunks=2)
    store.usage.record(other_tenant, kind="embed", model="minilm", prompt_tokens=7)
    # The PostgreSQL database is shared by the session: other tests' tenants may be there too.
    per_tenant = [
        row for row in store.usage.totals_per_tenant() if row[0] in (tenant, other_tenant)
    ]
    assert per_tenant == sorted(
        [(tenant, t) for t in store.usage.totals(tenant)]
        + [(other_tenant, t) for t in store.usage.totals(other_tenant)],
        key=lambda row: (row[0], row[1].kind, row[1].model),
    )
    assert len(per_tenant) == 3


def test_daily_sums_by_utc_day_and_kind(
    store: MetadataStore, tenant: str, other_tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows a few hours either side of UTC midnight land on their UTC day on both databases
    (PostgreSQL's ``date()`` alone would use the session's time zone)."""
    import kubemate.metadata.usage as usage

    midnight = datetime(2026, 12, 5, tzinfo=UTC)

    def record_at(at: datetime, tenant_id: str, **fields: object) -> None:
        monkeypatch.setattr(usage, "utcnow", lambda: at)
        store.usage.record(tenant_id, **fields)  # type: ignore[arg-type]

    record_at(midnight - timedelta(minutes=5), tenant, kind="generate", model="g", prompt_tokens=3)
    record_at(midnight + timedelta(minutes=5), tenant, kind="generate", model="g", prompt_tokens=4)
    record_at(midnight + timedelta(hours=23), tenant, kind="document", model="m", bytes=10)
    record_at(
        midnight + timedelta(hours=2), other_tenant, kind="generate", model="g", prompt_tokens=99
    )

    days = store.usage.daily(tenant, midnight - timedelta(days=1), midnight + timedelta(days=1))
    got = [(day.isoformat(), t.kind, t.prompt_tokens, t.bytes) for day, t in days]
    assert got == [
        ("2026-12-04", "generate", 3, 0),
        ("2026-12-05", "document", 0, 10),
        ("2026-12-05", "generate", 4, 0),
    ]
    # The window bounds are exclusive at the end.
    assert (
        store.usage.daily(tenant, midnight, midnight + timedelta(hours=1))[0][1].prompt_tokens == 4
    )
    with pytest.raises(ValueError, match="naive"):
        store.usage.daily(tenant, datetime(2026, 12, 5), midnight)
