"""Who is calling: the tenant and roles taken from a verified credential, never from the body."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    # What every tenant shares: models and runtimes, the registry, deployments, global model
    # settings. Only credentials of an operator tenant may carry it (docs/security.md).
    OPERATOR = "operator"
    ADMIN = "admin"  # the own tenant: API keys, tenant-scoped model choices, usage, audit
    EDITOR = "editor"  # upload, delete, re-index
    VIEWER = "viewer"  # query only


# A role includes every role below it: an operator also administers their own tenant.
_IMPLIED: dict[Role, frozenset[Role]] = {
    Role.OPERATOR: frozenset(Role),
    Role.ADMIN: frozenset({Role.ADMIN, Role.EDITOR, Role.VIEWER}),
    Role.EDITOR: frozenset({Role.EDITOR, Role.VIEWER}),
    Role.VIEWER: frozenset({Role.VIEWER}),
}


# The user id of an identity that presented an API key: the prefix, then the key's public id.
API_KEY_SUBJECT_PREFIX = "apikey:"


@dataclass(frozen=True, slots=True)
class Identity:
    tenant_id: str
    user_id: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        return any(role in _IMPLIED[r] for r in self.roles)

    @property
    def is_operator(self) -> bool:
        return self.has(Role.OPERATOR)

    @property
    def api_key_id(self) -> str | None:
        """The API key the caller presented, if it was one."""
        if self.user_id.startswith(API_KEY_SUBJECT_PREFIX):
            return self.user_id.removeprefix(API_KEY_SUBJECT_PREFIX)
        return None
