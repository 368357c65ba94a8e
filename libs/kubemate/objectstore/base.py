"""The ObjectStore port: where raw uploads and model files live."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from kubemate.errors import ClientError


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str
    etag: str | None = None


def tenant_key(tenant_id: str, *parts: str) -> str:
    """Every object key starts with its tenant, so a listing or a delete can never cross tenants."""
    for part in (tenant_id, *parts):
        if not part or "/" in part or part in (".", "..") or "\x00" in part:
            raise ClientError(f"invalid object key component {part!r}")
    return "/".join(("tenants", tenant_id, *parts))


class ObjectStore(Protocol):
    """Blob storage by key. Keys are ``/``-separated; adapters reject ``..`` components.

    Raises :class:`kubemate.errors.NotFound` for a missing key and
    :class:`kubemate.errors.BackendUnavailable` when the backend cannot be reached.
    """

    def put(
        self,
        key: str,
        data: BinaryIO,
        length: int = -1,
        content_type: str = "application/octet-stream",
        *,
        content_addressed: bool = False,
    ) -> ObjectInfo:
        """Store ``data`` read to its end (streamed; ``length`` -1 when unknown). Atomic: a reader
        sees the whole new object or the old one, never a partial write.

        ``content_addressed``: the key names the content (it holds a hash of it), so an object
        already there with ``length`` bytes may be kept, durable, instead of being written again;
        ``data`` is then left unread and the returned info is the kept object's. Adapters for
        which the check costs more than the write ignore it."""
        ...

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A readable stream of the object, for reading it without holding it all in memory."""
        ...

    def get(self, key: str) -> bytes: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Delete; deleting a missing key is not an error (idempotent)."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...
