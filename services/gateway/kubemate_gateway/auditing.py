"""The one place the gateway records administrative actions in the audit log. No FastAPI here.

:class:`AuditMiddleware` wraps the whole app: a request whose route has an audit action
(:mod:`kubemate_gateway.policy`) is recorded once its answer has started, with the answer's
status as the outcome, whether the gateway answered it (API keys, a refusal) or a service did
(models, deployments, settings, documents, re-indexes). Only callers whose credential was
verified are recorded: the tenant comes from the credential, and a request without one names
no one (it is counted in the request metrics and logged like any other).

Behind a forwardAuth that sends requests to the services itself, the gateway sees only the
``/auth/verify`` call: there it records the admission (:func:`record_action` with no status),
or the refusal. (The shipped Traefik configuration sends /v1 to the gateway instead.)
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubemate.auth.identity import Identity
from kubemate.logs import get_logger
from kubemate.metadata.audit import AuditEntry
from kubemate.metadata.store import MetadataStore
from kubemate_gateway.policy import Decision, decision_for

log = get_logger(__name__)

_IDENTITY_KEY = "verified_identity"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def remember_identity(scope: Scope, identity: Identity) -> None:
    """Leaves the verified caller where :class:`AuditMiddleware` finds it once answered."""
    scope.setdefault("state", {})[_IDENTITY_KEY] = identity


def remembered_identity(scope: Scope) -> Identity | None:
    identity = scope.get("state", {}).get(_IDENTITY_KEY)
    return identity if isinstance(identity, Identity) else None


async def record_action(
    store: MetadataStore,
    identity: Identity,
    decision: Decision,
    *,
    method: str,
    path: str,
    status: int | None,
    request_id: str,
) -> None:
    """Appends the record (and its log event). A record that cannot be stored is logged with
    every field, as ``audit.unstored``, rather than failing a request already answered."""
    if decision.action is None:
        return
    entry = AuditEntry.of(
        identity,
        decision.action,
        method=method,
        path=path,
        status=status,
        request_id=request_id,
        target=decision.target,
    )
    try:
        await anyio.to_thread.run_sync(store.audit.append, entry)
    except Exception as exc:  # the answer has gone out; the log keeps the record
        log.error("audit.unstored", error=repr(exc), **_fields(entry))


def _fields(entry: AuditEntry) -> dict[str, object]:
    return {
        "tenant_id": entry.tenant_id,
        "subject": entry.subject,
        "key_id": entry.key_id,
        "action": entry.action,
        "target": entry.target,
        "method": entry.method,
        "path": entry.path,
        "status": entry.status,
        "request_id": entry.request_id,
    }


class AuditMiddleware:
    """Pure ASGI (no task per request): reads pass straight through. ``store`` gives the
    lifespan's metadata store when a record is written."""

    def __init__(self, app: ASGIApp, store: Callable[[], MetadataStore]) -> None:
        self.app = app
        self.store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in _READS
            or not scope["path"].startswith("/v1/")
        ):
            await self.app(scope, receive, send)
            return
        decision = decision_for(scope)
        if decision.action is None:
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        except BaseException:
            # The server answers an escaped error with a 500 (or the client went away first).
            status = status or 500
            raise
        finally:
            identity = remembered_identity(scope)
            # Shielded: a client gone before the end does not undo what it asked for, so its
            # action is recorded all the same.
            if identity is not None:
                with anyio.CancelScope(shield=True):
                    await record_action(
                        self.store(),
                        identity,
                        decision,
                        method=scope["method"],
                        path=scope["path"],
                        status=status,
                        request_id=str(scope.get("state", {}).get("request_id", "")),
                    )
