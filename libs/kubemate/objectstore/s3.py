"""ObjectStore on an S3 API (MinIO in production) through the ``minio`` SDK.

Vendor errors never leave this module: a missing key is :class:`NotFound`, an unreachable or
failing server :class:`BackendUnavailable` (retryable), anything else :class:`ServiceError`.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import BinaryIO, NoReturn, cast
from xml.sax.saxutils import escape

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from kubemate.errors import BackendUnavailable, ClientError, NotFound, ServiceError
from kubemate.logs import get_logger
from kubemate.objectstore.base import ObjectInfo
from kubemate.objectstore.filesystem import DEFAULT_CONTENT_TYPE, validate_key
from kubemate.settings import ObjectStoreConfig, origin_of

log = get_logger(__name__)

# Multipart part size for streams of unknown length. Each part is held in memory while it is
# sent, so this bounds an upload's memory; 8 MiB x 10,000 parts allows objects up to ~80 GB.
DEFAULT_PART_SIZE = 8 * 1024 * 1024
# S3 refuses presigned URLs valid for longer than 7 days.
MAX_PRESIGN_EXPIRY_S = 7 * 24 * 3600
# MinIO's and S3's default: presigned URLs of a public address are signed for it unless the
# config names another region.
DEFAULT_REGION = "us-east-1"
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchVersion"})
_BUCKET_RACE_CODES = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})


def cors_configuration(origins: list[str]) -> bytes:
    """An S3 CORSConfiguration letting ``origins`` PUT objects with a Content-Type: what a
    browser's presigned upload needs (its preflight asks for PUT and content-type)."""
    allowed = "".join(f"<AllowedOrigin>{escape(origin)}</AllowedOrigin>" for origin in origins)
    return (
        '<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><CORSRule>'
        f"{allowed}<AllowedMethod>PUT</AllowedMethod><AllowedHeader>content-type</AllowedHeader>"
        "<ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>3600</MaxAgeSeconds>"
        "</CORSRule></CORSConfiguration>"
    ).encode()


def _http_client(connect_timeout_s: float, read_timeout_s: float) -> urllib3.PoolManager:
    # The SDK's own default waits 5 minutes to connect; a dead MinIO should fail fast instead.
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=certifi.where(),
        retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class _CountingReader:
    """Counts what the SDK reads, and refuses a stream shorter than its declared length with our
    error rather than the SDK's bare OSError."""

    def __init__(self, inner: BinaryIO, length: int) -> None:
        self._inner = inner
        self._length = length
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._inner.read(size)
        self.count += len(chunk)
        if not chunk and size != 0 and self.count < self._length:
            raise ClientError(f"stream ended after {self.count} of {self._length} bytes")
        return chunk


class S3ObjectStore:
    """Implements :class:`kubemate.objectstore.ObjectStore` on one bucket."""

    def __init__(
        self,
        config: ObjectStoreConfig,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 120.0,
        client: Minio | None = None,
    ) -> None:
        self._bucket = config.bucket
        self._region = config.region
        self._part_size = part_size
        self._client = client or Minio(
            config.endpoint,
            access_key=config.access_key,
            secret_key=config.secret_key.get_secret_value(),
            secure=config.secure,
            region=config.region,
            http_client=_http_client(connect_timeout_s, read_timeout_s),
        )
        # Presigned URLs name the address clients reach the store at (S3 signs the host), so
        # they are signed by a client of the public address. A region given up front: signing
        # is then local, never a request to an address this process may not reach.
        self._signer = self._client
        if config.public_url is not None and client is None:
            self._signer = Minio(
                f"{config.public_url.host}:{config.public_url.port}",
                access_key=config.access_key,
                secret_key=config.secret_key.get_secret_value(),
                secure=config.public_url.scheme == "https",
                region=config.region or DEFAULT_REGION,
            )
        self._cors_origins = [origin_of(url) for url in config.cors_origins]
        self._bucket_ready = False
        self._bucket_lock = threading.Lock()

    # ---- errors ---------------------------------------------------------------------------------

    def _raise(self, exc: Exception, key: str | None) -> NoReturn:
        what = f"object {key!r}" if key is not None else f"bucket {self._bucket!r}"
        if isinstance(exc, S3Error):
            if exc.code in _MISSING_KEY_CODES and key is not None:
                raise NotFound(f"{what} not found") from exc
            if exc.code == "NoSuchBucket":
                self._bucket_ready = False  # deleted behind our back: recreate on next use
            log.warning("objectstore.s3_error", code=exc.code, bucket=self._bucket, key=key)
            raise ServiceError(f"object store refused the request for {what}") from exc
        if isinstance(exc, ServerError | urllib3.exceptions.HTTPError):
            log.warning("objectstore.s3_unavailable", error=type(exc).__name__, key=key)
            raise BackendUnavailable("object store is unavailable") from exc
        if isinstance(exc, InvalidResponseError):
            raise ServiceError(f"object store sent an invalid response for {what}") from exc
        raise exc

    @contextmanager
    def _mapped(self, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except (S3Error, ServerError, InvalidResponseError, urllib3.exceptions.HTTPError) as exc:
            self._raise(exc, key)

    def _ensure_bucket(self) -> None:
        # Lazily, so building the store (in create_app) never needs the server to be up.
        if self._bucket_ready:
            return
        with self._bucket_lock, self._mapped():
            if self._bucket_ready:
                return
            if not self._client.bucket_exists(self._bucket):
                try:
                    self._client.make_bucket(self._bucket, location=self._region)
                    log.info("objectstore.bucket_created", bucket=self._bucket)
                    self._allow_browser_uploads()
                except S3Error as exc:
                    # Another replica created it between our check and our create.
                    if exc.code not in _BUCKET_RACE_CODES:
                        raise
            self._bucket_ready = True

    def _allow_browser_uploads(self) -> None:
        """The new bucket's CORS: browsers on the console's origins may PUT presigned uploads.
        MinIO's community edition has no bucket CORS (it answers NotImplemented, and allows
        the origins of its server-wide MINIO_API_CORS_ALLOW_ORIGIN): logged, not fatal."""
        if not self._cors_origins:
            return
        body = cors_configuration(self._cors_origins)
        try:
            # The SDK has no call for PutBucketCors; its request helper signs this one as it
            # signs its own bucket configurations (S3 requires the body's Content-MD5).
            self._client._execute(
                "PUT",
                self._bucket,
                body=body,
                headers={
                    "Content-MD5": base64.b64encode(
                        hashlib.md5(body, usedforsecurity=False).digest()
                    ).decode()
                },
                query_params={"cors": ""},
            )
        except S3Error as exc:
            log.warning(
                "objectstore.bucket_cors_refused",
                bucket=self._bucket,
                code=exc.code,
                hint="set the store's CORS: docs/operations/presigned-uploads.md",
            )
            return
        log.info("objectstore.bucket_cors_set", bucket=self._bucket, origins=self._cors_origins)

    # ---- the port -------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        data: BinaryIO,
        length: int = -1,
        content_type: str = DEFAULT_CONTENT_TYPE,
        *,
        content_addressed: bool = False,  # ignored: a HEAD first would cost every new object
    ) -> ObjectInfo:
        validate_key(key)
        self._ensure_bucket()
        reader = _CountingReader(data, length)
        with self._mapped(key):
            result = self._client.put_object(
                self._bucket,
                key,
                cast(BinaryIO, reader),
                length,
                content_type=content_type,
                part_size=0 if length >= 0 else self._part_size,
                # Parallel part uploads leave the SDK's worker threads blocked forever when the
                # caller's stream fails mid-upload; one at a time keeps failures leak-free.
                num_parallel_uploads=1,
            )
        return ObjectInfo(key=key, size=reader.count, content_type=content_type, etag=result.etag)

    @contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        validate_key(key)
        self._ensure_bucket()
        with self._mapped(key):
            response = self._client.get_object(self._bucket, key)
        try:
            # The caller reads the body lazily: a connection lost mid-read surfaces here.
            with self._mapped(key):
                yield cast(BinaryIO, response)
        finally:
            response.close()
            response.release_conn()

    def get(self, key: str) -> bytes:
        with self.open(key) as body:
            return body.read()

    def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        self._ensure_bucket()
        with self._mapped(key):
            obj = self._client.stat_object(self._bucket, key)
        return ObjectInfo(
            key=key,
            size=obj.size or 0,
            content_type=obj.content_type or DEFAULT_CONTENT_TYPE,
            etag=obj.etag,
        )

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        validate_key(key)
        self._ensure_bucket()
        # S3 answers 204 for a missing key too, which is the idempotence the port asks for.
        with self._mapped(key):
            self._client.remove_object(self._bucket, key)

    def presigned_put_url(self, key: str, expires_s: int) -> str:
        """A URL that lets whoever holds it PUT the object ``key`` for ``expires_s`` seconds,
        without credentials: large uploads go to the store directly, not through the API.

        Signed locally (no request to the server when a region is configured). The URL names the
        configured endpoint, so clients must be able to reach that address."""
        if not 1 <= expires_s <= MAX_PRESIGN_EXPIRY_S:
            raise ValueError(f"expires_s must be between 1 and {MAX_PRESIGN_EXPIRY_S}")
        validate_key(key)
        self._ensure_bucket()
        with self._mapped(key):
            return self._signer.presigned_put_object(
                self._bucket, key, expires=timedelta(seconds=expires_s)
            )

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` in key order (S3 lists in UTF-8 byte order)."""
        self._ensure_bucket()
        with self._mapped():
            # MinIO returns the content type in the listing's user metadata; other S3 servers
            # (and moto) do not, and then each object costs one HEAD.
            for obj in self._client.list_objects(
                self._bucket, prefix=prefix, recursive=True, include_user_meta=True
            ):
                if obj.is_dir or obj.object_name is None:
                    continue
                meta = {k.lower(): v for k, v in (obj.metadata or {}).items()}
                content_type = meta.get("content-type")
                if content_type is None:
                    try:
                        info = self.stat(obj.object_name)
                    except NotFound:
                        continue  # deleted while listing
                    content_type = info.content_type
                yield ObjectInfo(
                    key=obj.object_name,
                    size=obj.size or 0,
                    content_type=content_type,
                    etag=obj.etag,
                )
