"""The audit log: who did what to which target, when, and how it ended.

Append-only: :class:`AuditRepository` can append a record and read pages of them, and nothing
else (the migration's triggers also refuse UPDATE and DELETE from any client). Each append is
also a structured log event, ``audit.recorded``, so that a log pipeline has the same record even
when the database is the thing that failed.

Recording an action is one call, wherever it happens::

    store.audit.append(AuditEntry.of(identity, "backups.create", target=name, status=201, ...))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Select, insert, select

from kubemate.logs import get_logger
from kubemate.metadata.database import Repository
from kubemate.metadata.models import AuditRecord, utcnow

if TYPE_CHECKING:  # the worker uses the store without the auth package (and its JWT library)
    from kubemate.auth.identity import Identity

log = get_logger(__name__)

Outcome = Literal["succeeded", "refused", "failed", "admitted"]
OUTCOMES: tuple[Outcome, ...] = ("succeeded", "refused", "failed", "admitted")
MAX_PAGE = 500


def outcome_of(status: int | None) -> Outcome:
    """succeeded (2xx, 3xx), refused (4xx: the caller's mistake or a denial), failed (5xx), or
    admitted (forwardAuth let it through; the service's answer was not seen)."""
    if status is None:
        return "admitted"
    if status < 400:
        return "succeeded"
    return "refused" if status < 500 else "failed"


def _clip(value: str | None, limit: int) -> str | None:
    return None if value is None else value[:limit]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A record to append (the database sets its id and time)."""

    tenant_id: str
    subject: str
    roles: tuple[str, ...]
    action: str
    method: str
    path: str
    status: int | None
    request_id: str
    target: str | None = None
    key_id: str | None = None

    @classmethod
    def of(
        cls,
        identity: Identity,
        action: str,
        *,
        method: str,
        path: str,
        status: int | None,
        request_id: str,
        target: str | None = None,
    ) -> AuditEntry:
        """The record of ``identity`` doing ``action``."""
        return cls(
            tenant_id=identity.tenant_id,
            subject=identity.user_id,
            roles=tuple(sorted(r.value for r in identity.roles)),
            action=action,
            method=method,
            path=path,
            status=status,
            request_id=request_id,
            target=target,
            key_id=identity.api_key_id,
        )


@dataclass(frozen=True, slots=True)
class AuditRecordView:
    id: int
    at: datetime
    tenant_id: str
    subject: str
    key_id: str | None
    roles: tuple[str, ...]
    action: str
    target: str | None
    method: str
    path: str
    status: int | None
    outcome: Outcome
    request_id: str

    @classmethod
    def of(cls, row: AuditRecord) -> AuditRecordView:
        return cls(
            id=row.id,
            at=row.at,
            tenant_id=row.tenant_id,
            subject=row.subject,
            key_id=row.key_id,
            roles=tuple(r for r in row.roles.split(",") if r),
            action=row.action,
            target=row.target,
            method=row.method,
            path=row.path,
            status=row.status,
            outcome=outcome_of(row.status),
            request_id=row.request_id,
        )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which records to read. ``tenant_id`` None reads every tenant's: only the platform
    operator's view may pass it (the caller decides; the repository does not know roles)."""

    tenant_id: str | None
    action: str | None = None
    subject: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    before_id: int | None = None  # the previous page's cursor
    limit: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[AuditRecordView] = field(default_factory=list)
    next_cursor: int | None = None  # pass as before_id for the next (older) page


def _where_outcome(query: Select[AuditRecord], outcome: Outcome) -> Select[AuditRecord]:
    status = AuditRecord.status
    if outcome == "admitted":
        return query.where(status.is_(None))
    if outcome == "succeeded":
        return query.where(status < 400)
    if outcome == "refused":
        return query.where(status >= 400, status < 500)
    return query.where(status >= 500)


class AuditRepository(Repository):
    """Append and read; there is deliberately no update or delete."""

    def append(self, entry: AuditEntry) -> int:
        """The new record's id. Logged as ``audit.recorded`` once stored."""
        values = {
            "at": utcnow(),
            "tenant_id": entry.tenant_id,
            "subject": _clip(entry.subject, 255),
            "key_id": entry.key_id,
            "roles": ",".join(entry.roles),
            "action": entry.action[:64],
            "target": _clip(entry.target, 1024),
            "method": entry.method[:8],
            "path": entry.path[:1024],
            "status": entry.status,
            "request_id": entry.request_id[:128],
        }
        with self._db.connection(write=True) as connection:
            record_id = connection.execute(
                insert(AuditRecord).values(values).returning(AuditRecord.id)
            ).scalar_one()
        log.info(
            "audit.recorded",
            audit_id=record_id,
            tenant_id=entry.tenant_id,
            subject=entry.subject,
            key_id=entry.key_id,
            roles=list(entry.roles),
            action=entry.action,
            target=entry.target,
            method=entry.method,
            path=entry.path,
            status=entry.status,
            outcome=outcome_of(entry.status),
            request_id=entry.request_id,
        )
        return int(record_id)

    def page(self, where: AuditFilter) -> AuditPage:
        """Newest first, at most ``where.limit`` records, and the cursor of the next page."""
        query = select(AuditRecord)
        if where.tenant_id is not None:
            query = query.where(AuditRecord.tenant_id == where.tenant_id)
        if where.action is not None:
            query = query.where(AuditRecord.action == where.action)
        if where.subject is not None:
            query = query.where(AuditRecord.subject == where.subject)
        if where.outcome is not None:
            query = _where_outcome(query, where.outcome)
        if where.since is not None:
            query = query.where(AuditRecord.at >= where.since)
        if where.until is not None:
            query = query.where(AuditRecord.at < where.until)
        if where.before_id is not None:
            query = query.where(AuditRecord.id < where.before_id)
        # One more than asked: whether there is a next page, without counting.
        query = query.order_by(AuditRecord.id.desc()).limit(where.limit + 1)
        with self._db.transaction() as session:
            rows = [AuditRecordView.of(row) for row in session.scalars(query)]
        more = len(rows) > where.limit
        items = rows[: where.limit]
        return AuditPage(items, items[-1].id if more else None)
