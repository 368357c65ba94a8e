"""Identity: JWT bearer tokens for clients, signed identity headers between gateway and services."""

from kubemate.auth.identity import Identity, Role
from kubemate.auth.tokens import issue_token, verify_token

__all__ = ["Identity", "Role", "issue_token", "verify_token"]
