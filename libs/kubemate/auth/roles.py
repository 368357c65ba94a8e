"""Who may do what: the role checks the gateway and the services share, and how a platform
operator is recognised (docs/security.md).

An operator holds the ``operator`` role in a verified credential (a token's roles claim, or an
API key an operator created) whose tenant is one of ``auth.operator_tenants``. The same role
on any other tenant's credential is refused outright, so that an identity provider's group
mapping gone wrong cannot hand a customer the platform.
"""

from __future__ import annotations

from collections.abc import Collection

from kubemate.auth.identity import Identity, Role
from kubemate.errors import Forbidden, OperatorRequired, Unauthenticated


def refuse_missing_role(identity: Identity, role: Role) -> None:
    """Raises :class:`OperatorRequired` (an operator's action) or :class:`Forbidden` unless
    ``identity`` holds ``role`` or a role that includes it."""
    if identity.has(role):
        return
    if role is Role.OPERATOR:
        raise OperatorRequired(
            "this action changes what every tenant shares: only the platform operator may"
        )
    raise Forbidden(f"this action needs the {role.value} role")


def check_operator_claim(identity: Identity, operator_tenants: Collection[str]) -> Identity:
    """``identity`` itself, or :class:`Unauthenticated` when it claims the operator role for a
    tenant that is not an operator tenant."""
    if Role.OPERATOR in identity.roles and identity.tenant_id not in operator_tenants:
        raise Unauthenticated(
            f"the operator role is not valid for tenant {identity.tenant_id!r}: "
            "only credentials of an operator tenant may carry it"
        )
    return identity
