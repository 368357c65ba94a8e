"""Usage totals of one tenant for cost allocation. No FastAPI here.

Read from the metadata store's usage ledger (sums per kind and model), then grouped as asked:
by ``kind``, by ``model``, by both, or not at all (one total for the tenant).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from kubemate.errors import ValidationFailed
from kubemate.metadata.store import MetadataStore
from kubemate.metadata.usage import UsageTotals

GROUP_KEYS = ("kind", "model")
_SUMMED = ("requests", "prompt_tokens", "completion_tokens", "bytes", "chunks")


def parse_bound(value: str | None, *, name: str) -> datetime | None:
    """An ISO 8601 date or date-time; one without a zone is UTC (a date is its midnight)."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(value), time())
        except ValueError:
            raise ValidationFailed(f"{name}: {value!r} is not an ISO 8601 date or time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_group_by(value: str | None) -> list[str]:
    if value is None or value.strip() == "":
        return list(GROUP_KEYS)
    keys = [k.strip() for k in value.split(",") if k.strip()]
    unknown = [k for k in keys if k not in (*GROUP_KEYS, "tenant")]
    if unknown:
        raise ValidationFailed(
            f"group_by: unknown {', '.join(unknown)}; use kind, model, or both (comma-separated)"
        )
    return [k for k in GROUP_KEYS if k in keys]  # "tenant" alone: one total


@dataclass
class _Sum:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    bytes: int = 0
    chunks: int = 0
    latency_ms_total: float = 0.0

    def add(self, row: UsageTotals) -> None:
        for key in _SUMMED:
            setattr(self, key, getattr(self, key) + getattr(row, key))
        self.latency_ms_total += row.latency_ms_total

    def out(self) -> dict[str, Any]:
        return {
            **{key: getattr(self, key) for key in _SUMMED},
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "latency_ms_avg": round(self.latency_ms_total / self.requests, 3)
            if self.requests
            else 0.0,
        }


def usage_report(
    store: MetadataStore,
    tenant_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    group_by: list[str],
) -> dict[str, Any]:
    if since is not None and until is not None and since >= until:
        raise ValidationFailed("from must be before to")
    rows = store.usage.totals(tenant_id, since=since, until=until)
    total = _Sum()
    groups: dict[tuple[str, ...], _Sum] = {}
    for row in rows:
        total.add(row)
        key = tuple(getattr(row, k) for k in group_by)
        groups.setdefault(key, _Sum()).add(row)
    return {
        "tenant": tenant_id,
        "from": since.isoformat() if since else None,
        "to": until.isoformat() if until else None,
        "group_by": group_by,
        "totals": total.out(),
        "groups": [
            {**dict(zip(group_by, key, strict=True)), **summed.out()}
            for key, summed in sorted(groups.items())
        ]
        if group_by
        else [],
    }


MAX_SERIES_DAYS = 366


def usage_series(store: MetadataStore, tenant_id: str, *, days: int, today: date) -> dict[str, Any]:
    """A point per UTC day, oldest first, ending ``today``, each day there even without usage
    (a chart needs its zeros): tokens generated and embedded, documents processed, and their
    bytes and chunks."""
    if not 1 <= days <= MAX_SERIES_DAYS:
        raise ValidationFailed(f"days must be between 1 and {MAX_SERIES_DAYS}")
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time(), UTC)
    until = datetime.combine(today + timedelta(days=1), time(), UTC)
    points = {first + timedelta(days=i): _Day() for i in range(days)}
    for day, row in store.usage.daily(tenant_id, since, until):
        if day in points:
            points[day].add(row)
    return {
        "tenant": tenant_id,
        "days": days,
        "from": since.isoformat(),
        "to": until.isoformat(),
        "series": [{"date": day.isoformat(), **point.out()} for day, point in points.items()],
    }


@dataclass
class _Day:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embedded_tokens: int = 0
    documents: int = 0
    bytes: int = 0
    chunks: int = 0

    def add(self, row: UsageTotals) -> None:
        if row.kind == "generate":
            self.prompt_tokens += row.prompt_tokens
            self.completion_tokens += row.completion_tokens
        elif row.kind == "embed":
            self.embedded_tokens += row.prompt_tokens
        elif row.kind == "document":
            self.documents += row.requests
            self.bytes += row.bytes
            self.chunks += row.chunks  # its embedding tokens are on an "embed" row of its own

    def out(self) -> dict[str, int]:
        return {
            "tokens": self.prompt_tokens + self.completion_tokens + self.embedded_tokens,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "embedded_tokens": self.embedded_tokens,
            "documents": self.documents,
            "bytes": self.bytes,
            "chunks": self.chunks,
        }
