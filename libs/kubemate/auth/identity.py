"""Who is calling: the tenant and roles taken from a verified credential, never from the body."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"  # models, tenants, usage
    EDITOR = "editor"  # upload, delete, query
    VIEWER = "viewer"  # query only


# A role includes every role below it.
_IMPLIED: dict[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset({Role.ADMIN, Role.EDITOR, Role.VIEWER}),
    Role.EDITOR: frozenset({Role.EDITOR, Role.VIEWER}),
    Role.VIEWER: frozenset({Role.VIEWER}),
}


@dataclass(frozen=True, slots=True)
class Identity:
    tenant_id: str
    user_id: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        return any(role in _IMPLIED[r] for r in self.roles)
