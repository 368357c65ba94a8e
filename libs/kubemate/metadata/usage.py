"""The usage ledger: a row per generation, embedding call or processed document, and its
totals (per tenant for the usage API, over all tenants for the Prometheus counters)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import Date, Select, func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from kubemate.metadata.database import Repository
from kubemate.metadata.models import USAGE_KINDS, Usage, utcnow

UsageKind = Literal["generate", "embed", "document"]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One row of the usage ledger, for a write that carries it along
    (:meth:`DocumentRepository.complete`); :meth:`UsageRepository.record` writes one alone."""

    kind: UsageKind
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    bytes: int = 0
    chunks: int = 0
    latency_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in USAGE_KINDS:
            raise ValueError(f"usage kind must be one of {sorted(USAGE_KINDS)}, not {self.kind!r}")

    def values(self, tenant_id: str) -> dict[str, Any]:
        """The row's column values (an INSERT's parameters)."""
        return {
            "tenant_id": tenant_id,
            "kind": self.kind,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "bytes": self.bytes,
            "chunks": self.chunks,
            "latency_ms": self.latency_ms,
            "created_at": utcnow(),
        }


@dataclass(frozen=True, slots=True)
class UsageTotals:
    kind: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    bytes: int
    chunks: int
    latency_ms_total: float

    @property
    def latency_ms_avg(self) -> float:
        return self.latency_ms_total / self.requests if self.requests else 0.0


class utc_day(FunctionElement[date]):  # lower case, as SQL names its functions
    """The UTC calendar day of a timestamp column, on both databases: PostgreSQL's ``date()``
    would use the session's time zone, SQLite keeps naive UTC text."""

    type = Date()
    inherit_cache = True
    name = "utc_day"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC')::date"


@compiles(utc_day)
def _utc_day_default(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)})"


def insert_usage(connection: Connection, tenant_id: str, rows: Sequence[UsageRow]) -> None:
    """``rows`` in the caller's transaction (nothing when there are none)."""
    if rows:
        connection.execute(insert(Usage), [row.values(tenant_id) for row in rows])


def _totals(*keys: InstrumentedAttribute[str]) -> Select[*tuple[Any, ...]]:
    """Sums of the ledger grouped by ``keys`` (which come first in each row), ordered by them."""
    return (
        select(
            *keys,
            Usage.kind,
            Usage.model,
            func.count(),
            func.coalesce(func.sum(Usage.prompt_tokens), 0),
            func.coalesce(func.sum(Usage.completion_tokens), 0),
            func.coalesce(func.sum(Usage.bytes), 0),
            func.coalesce(func.sum(Usage.chunks), 0),
            func.coalesce(func.sum(Usage.latency_ms), 0.0),
        )
        .group_by(*keys, Usage.kind, Usage.model)
        .order_by(*keys, Usage.kind, Usage.model)
    )


def _totals_of(row: Sequence[Any]) -> UsageTotals:
    """A :func:`_totals` row without its keys."""
    kind, model, count, prompt, completion, size, chunks, latency = row
    return UsageTotals(
        kind=kind,
        model=model,
        requests=int(count),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        bytes=int(size),
        chunks=int(chunks),
        latency_ms_total=float(latency),
    )


class UsageRepository(Repository):
    def record(
        self,
        tenant_id: str,
        *,
        kind: UsageKind,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        bytes: int = 0,  # shadows the builtin: it is the column's name, and the caller's keyword
        chunks: int = 0,
        latency_ms: float = 0.0,
    ) -> None:
        """One row, by its fields (:meth:`add` for a :class:`UsageRow`)."""
        row = UsageRow(
            kind=kind,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            bytes=bytes,
            chunks=chunks,
            latency_ms=latency_ms,
        )
        self.add(tenant_id, row)

    def add(self, tenant_id: str, row: UsageRow) -> None:
        """One usage row, in a transaction of its own."""
        with self._db.connection(write=True) as connection:
            insert_usage(connection, tenant_id, [row])

    def totals(
        self,
        tenant_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[UsageTotals]:
        """Sums per (kind, model) over ``since <= created_at < until``, ordered by kind, model."""
        for bound in (since, until):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("naive datetimes are ambiguous: pass timezone-aware bounds")
        query = _totals().where(Usage.tenant_id == tenant_id)
        if since is not None:
            query = query.where(Usage.created_at >= since)
        if until is not None:
            query = query.where(Usage.created_at < until)
        with self._db.connection() as connection:
            return [_totals_of(row) for row in connection.execute(query)]

    def daily(
        self, tenant_id: str, since: datetime, until: datetime
    ) -> list[tuple[date, UsageTotals]]:
        """Sums per UTC day and (kind, model) over ``since <= created_at < until``, by day."""
        for bound in (since, until):
            if bound.tzinfo is None:
                raise ValueError("naive datetimes are ambiguous: pass timezone-aware bounds")
        day = utc_day(Usage.created_at).label("day")
        query = _totals(day).where(  # type: ignore[arg-type]
            Usage.tenant_id == tenant_id, Usage.created_at >= since, Usage.created_at < until
        )
        with self._db.connection() as connection:
            return [(_as_date(row[0]), _totals_of(row[1:])) for row in connection.execute(query)]

    def totals_per_tenant(self) -> list[tuple[str, UsageTotals]]:
        """Every tenant's sums per (kind, model), of all time: the ledger's running totals."""
        with self._db.connection() as connection:
            return [
                (row[0], _totals_of(row[1:]))
                for row in connection.execute(_totals(Usage.tenant_id))
            ]


def _as_date(value: date | str) -> date:
    """SQLite's ``date()`` is text; PostgreSQL's a date."""
    return value if isinstance(value, date) else date.fromisoformat(value)
