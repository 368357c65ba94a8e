"""Uploads by presigned URL: large files go to the object store directly. No FastAPI here.

1. :func:`start_upload` records a pending upload (in Redis, expiring) and returns a URL that
   lets the client PUT the file to a staging key, ``tenants/<t>/uploads/<upload id>``.
2. :func:`complete_upload` streams the staged object back once, to a temporary file, measuring
   and hashing it (and checking what the client declared), then accepts that copy exactly like a
   form upload: type by magic bytes, a PDF's structure, content-addressed key, row, stream
   entry. The staging object is then deleted, so a PUT to the URL after completion cannot
   change a document; a refused file deletes it too (and the pending upload with it).

Only stores that can sign URLs (S3) support this; they are told apart by :class:`PresignsUploads`.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import redis

from kubemate.errors import (
    BackendUnavailable,
    ChecksumMismatch,
    ClientError,
    DocumentProcessingError,
    EmptyDocument,
    NotFound,
    PayloadTooLarge,
    PresignedUploadsUnsupported,
    UploadIncomplete,
    UploadNotFound,
)
from kubemate.logs import get_logger
from kubemate.metadata.store import MetadataStore
from kubemate.objectstore import ObjectStore, tenant_key
from kubemate.queue import IngestQueue
from kubemate.settings import RedisConfig
from kubemate.text.split import SplitterSpec
from kubemate_ingest.pdf_inspect import PdfPolicy
from kubemate_ingest.uploads import Accepted, accept_upload

log = get_logger(__name__)

# The pending upload outlives its URL by this much, so a PUT that finished just in time can
# still be completed.
COMPLETION_GRACE_S = 3600
SPOOL_MAX_MEMORY = 8 * 1024 * 1024
_READ_BLOCK = 1024 * 1024


@runtime_checkable
class PresignsUploads(Protocol):
    """An object store that can sign a URL for one PUT (the S3 adapter)."""

    def presigned_put_url(self, key: str, expires_s: int) -> str: ...


@dataclass(frozen=True, slots=True)
class PendingUpload:
    upload_id: str
    tenant_id: str
    collection: str
    filename: str
    object_key: str
    expires_at: str  # ISO 8601, of the URL
    splitter: str = ""  # SplitterSpec JSON
    size_bytes: str = ""  # declared by the client, checked at completion
    sha256: str = ""  # declared by the client, checked at completion


class PendingUploads:
    """Pending uploads in Redis, one expiring hash each, keyed by upload id."""

    def __init__(self, client: redis.Redis, config: RedisConfig) -> None:
        self._r = client
        self._prefix = f"{config.ingest_stream}:upload:"

    def add(self, upload: PendingUpload, ttl_s: int) -> None:
        key = self._prefix + upload.upload_id
        try:
            pipe = self._r.pipeline(transaction=True)
            # redis-py's Mapping type is keyed by a union, which a dict[str, ...] never matches.
            pipe.hset(key, mapping=asdict(upload))  # type: ignore[arg-type]
            pipe.expire(key, ttl_s)
            pipe.execute()
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc

    def get(self, tenant_id: str, upload_id: str) -> PendingUpload:
        if not upload_id.isalnum() or len(upload_id) > 64:
            raise UploadNotFound(f"upload {upload_id} not found")
        try:
            fields: dict[str, str] = self._r.hgetall(self._prefix + upload_id)  # type: ignore[assignment]
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc
        if not fields or fields.get("tenant_id") != tenant_id:
            raise UploadNotFound(f"upload {upload_id} not found")
        return PendingUpload(**{k: fields.get(k, "") for k in PendingUpload.__dataclass_fields__})

    def discard(self, upload_id: str) -> None:
        try:
            self._r.delete(self._prefix + upload_id)
        except redis.RedisError as exc:
            raise BackendUnavailable(f"redis: {exc}") from exc


def start_upload(
    *,
    tenant_id: str,
    collection: str,
    filename: str,
    splitter: SplitterSpec,
    size_bytes: int | None,
    sha256: str | None,
    max_bytes: int,
    expires_s: int,
    objects: ObjectStore,
    pending: PendingUploads,
) -> tuple[PendingUpload, str]:
    """A pending upload and the URL to PUT the file to."""
    if not isinstance(objects, PresignsUploads):
        raise PresignedUploadsUnsupported(
            "this deployment's object store (filesystem) cannot issue presigned URLs; "
            "upload the file with POST /v1/documents instead"
        )
    if size_bytes is not None and size_bytes > max_bytes:
        raise PayloadTooLarge(f"the file is larger than the limit of {max_bytes} bytes")
    upload_id = secrets.token_hex(16)
    key = tenant_key(tenant_id, "uploads", upload_id)
    url = objects.presigned_put_url(key, expires_s)
    upload = PendingUpload(
        upload_id=upload_id,
        tenant_id=tenant_id,
        collection=collection,
        filename=filename,
        object_key=key,
        expires_at=(datetime.now(UTC) + timedelta(seconds=expires_s)).isoformat(),
        splitter=splitter.to_json(),
        size_bytes="" if size_bytes is None else str(size_bytes),
        sha256=(sha256 or "").lower(),
    )
    pending.add(upload, expires_s + COMPLETION_GRACE_S)
    log.info("upload.presigned", upload_id=upload_id, expires_s=expires_s)
    return upload, url


def complete_upload(
    tenant_id: str,
    upload_id: str,
    *,
    max_bytes: int,
    pending: PendingUploads,
    objects: ObjectStore,
    store: MetadataStore,
    queue: IngestQueue,
    pdf: PdfPolicy,
) -> Accepted:
    upload = pending.get(tenant_id, upload_id)
    try:
        info = objects.stat(upload.object_key)
    except NotFound:
        raise UploadIncomplete(
            "nothing has been uploaded to the presigned URL yet: PUT the file, then complete"
        ) from None
    try:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY) as copy:
            if info.size > max_bytes:
                raise PayloadTooLarge(f"the file is larger than the limit of {max_bytes} bytes")
            sha256, size = _copy_measured(objects, upload.object_key, copy, max_bytes)
            _check_declared(upload, sha256, size)
            accepted = accept_upload(
                tenant_id=tenant_id,
                collection=upload.collection,
                filename=upload.filename,
                stream=copy,  # type: ignore[arg-type]
                max_bytes=max_bytes,
                store=store,
                objects=objects,
                queue=queue,
                pdf=pdf,
                splitter=SplitterSpec.model_validate_json(upload.splitter),
            )
    except (ClientError, DocumentProcessingError):
        # The file itself is refused: the upload is used up, and its object with it.
        _discard(upload, objects, pending)
        raise
    _discard(upload, objects, pending)
    log.info("upload.completed", upload_id=upload_id, document_id=accepted.document.id)
    return accepted


def _copy_measured(
    objects: ObjectStore, key: str, target: tempfile.SpooledTemporaryFile[bytes], limit: int
) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with objects.open(key) as body:
        while block := body.read(_READ_BLOCK):
            size += len(block)
            if size > limit:
                raise PayloadTooLarge(f"the file is larger than the limit of {limit} bytes")
            digest.update(block)
            target.write(block)
    target.seek(0)
    if size == 0:
        raise EmptyDocument("the uploaded file is empty")
    return digest.hexdigest(), size


def _check_declared(upload: PendingUpload, sha256: str, size: int) -> None:
    if upload.size_bytes and int(upload.size_bytes) != size:
        raise ChecksumMismatch(f"{size} bytes were uploaded, {upload.size_bytes} were declared")
    if upload.sha256 and upload.sha256 != sha256:
        raise ChecksumMismatch("the uploaded file's SHA-256 differs from the one declared")


def _discard(upload: PendingUpload, objects: ObjectStore, pending: PendingUploads) -> None:
    objects.delete(upload.object_key)
    pending.discard(upload.upload_id)
