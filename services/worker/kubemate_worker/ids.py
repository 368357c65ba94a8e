"""Deterministic ids: the same chunk of the same document always gets the same id, so
re-processing a document overwrites its chunks instead of duplicating them."""

from __future__ import annotations

import hashlib


def chunk_id(tenant_id: str, document_id: str, position: int) -> str:
    return hashlib.sha256(f"{tenant_id}\x1f{document_id}\x1f{position}".encode()).hexdigest()[:32]
