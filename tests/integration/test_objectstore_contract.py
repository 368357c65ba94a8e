"""One contract for every ObjectStore adapter: the filesystem store and the S3 store (on moto).

moto stands in for MinIO (see tests/fixtures/s3.py); it performs no auth checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import uuid
from pathlib import Path

import pytest
from minio.error import S3Error, ServerError
from pydantic import SecretStr
from urllib3.exceptions import MaxRetryError, NewConnectionError

from kubemate.errors import BackendUnavailable, ClientError, NotFound, ServiceError
from kubemate.objectstore import ObjectStore, build_object_store, tenant_key
from kubemate.objectstore.filesystem import FilesystemObjectStore
from kubemate.objectstore.s3 import DEFAULT_PART_SIZE, S3ObjectStore
from kubemate.settings import ObjectStoreConfig

MiB = 1024 * 1024


class ChunkedStream:
    """A non-seekable body of unknown length, read in uneven chunks, as an upload arrives."""

    def __init__(self, data: bytes, chunk: int = 65_537, fail_after: int | None = None) -> None:
        self._data = data
        self._chunk = chunk
        self._pos = 0
        self._fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        if self._fail_after is not None and self._pos >= self._fail_after:
            raise ConnectionResetError("client went away mid-upload")
        n = self._chunk if size is None or size < 0 else min(size, self._chunk)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


def _body(size: int, seed: int = 0) -> bytes:
    # Deterministic, incompressible-looking bytes without holding a random generator's state.
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


@pytest.fixture(
    params=[
        "filesystem",
        "filesystem-sidecars",
        pytest.param("s3", marks=pytest.mark.integration),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "filesystem":
        return build_object_store(ObjectStoreConfig(provider="filesystem", root=tmp_path / "obj"))
    if request.param == "filesystem-sidecars":  # filesystems without extended attributes
        return FilesystemObjectStore(tmp_path / "obj", xattrs=False)
    base: ObjectStoreConfig = request.getfixturevalue("s3_config")
    # A bucket per test keeps tests independent on the shared moto server; it also exercises
    # the adapter's create-the-bucket-on-first-use path every time.
    return build_object_store(base.model_copy(update={"bucket": f"km-{uuid.uuid4().hex[:16]}"}))


class TestObjectStoreContract:
    def test_put_get_roundtrip(self, store: ObjectStore) -> None:
        key = tenant_key("t1", "doc1", "raw")
        info = store.put(key, io.BytesIO(b"hello"), length=5, content_type="text/plain")
        assert (info.key, info.size, info.content_type) == (key, 5, "text/plain")
        assert store.get(key) == b"hello"
        assert store.exists(key)

    def test_streamed_body_of_unknown_length(self, store: ObjectStore) -> None:
        # Larger than the S3 part size, so the S3 adapter goes through a multipart upload.
        data = _body(DEFAULT_PART_SIZE + 3 * MiB + 17, seed=1)
        key = tenant_key("t1", "big", "raw")
        info = store.put(key, ChunkedStream(data), content_type="application/pdf")  # type: ignore[arg-type]
        assert info.size == len(data)
        assert store.stat(key).size == len(data)
        assert hashlib.sha256(store.get(key)).digest() == hashlib.sha256(data).digest()

    def test_empty_object(self, store: ObjectStore) -> None:
        key = tenant_key("t1", "empty")
        assert store.put(key, io.BytesIO(b"")).size == 0
        assert store.get(key) == b""
        assert store.stat(key).size == 0

    def test_overwrite_replaces_data_and_content_type(self, store: ObjectStore) -> None:
        key = tenant_key("t1", "doc", "raw")
        store.put(key, io.BytesIO(b"first version"), content_type="text/plain")
        store.put(key, io.BytesIO(b"v2"), content_type="application/json")
        assert store.get(key) == b"v2"
        info = store.stat(key)
        assert (info.size, info.content_type) == (2, "application/json")

    def test_content_addressed_put_of_the_same_content(self, store: ObjectStore) -> None:
        data = b"the same bytes"
        key = tenant_key("t1", "documents", hashlib.sha256(data).hexdigest())
        store.put(key, io.BytesIO(data), len(data), "text/plain", content_addressed=True)
        info = store.put(key, io.BytesIO(data), len(data), "text/plain", content_addressed=True)
        assert (info.key, info.size, info.content_type) == (key, len(data), "text/plain")
        assert store.get(key) == data
        assert [o.key for o in store.list("tenants/t1/")] == [key]

    def test_stat_reports_size_and_content_type(self, store: ObjectStore) -> None:
        key = tenant_key("t1", "doc", "raw")
        store.put(key, io.BytesIO(b"x" * 1234), length=1234, content_type="application/pdf")
        info = store.stat(key)
        assert (info.key, info.size, info.content_type) == (key, 1234, "application/pdf")
        assert info.etag

    def test_default_content_type(self, store: ObjectStore) -> None:
        key = tenant_key("t1", "blob")
        store.put(key, io.BytesIO(b"\x00\x01"))
        assert store.stat(key).content_type == "application/octet-stream"

    def test_list_by_prefix_is_tenant_scoped_and_sorted(self, store: ObjectStore) -> None:
        mine = [tenant_key("t1", "b", "raw"), tenant_key("t1", "a", "raw"), tenant_key("t1", "c")]
        # "t10" shares the string prefix "tenants/t1": only the trailing "/" keeps it out.
        others = [tenant_key("t10", "a", "raw"), tenant_key("t2", "a", "raw")]
        for i, key in enumerate(mine + others):
            store.put(key, io.BytesIO(b"x" * (i + 1)), content_type=f"text/x-{i}")
        listed = list(store.list("tenants/t1/"))
        assert [o.key for o in listed] == sorted(mine)
        by_key = {o.key: o for o in listed}
        assert by_key[mine[0]].size == 1
        assert by_key[mine[0]].content_type == "text/x-0"
        assert [o.key for o in store.list("tenants/t2/")] == [others[1]]
        assert list(store.list("tenants/nobody/")) == []

    def test_list_with_partial_component_prefix(self, store: ObjectStore) -> None:
        for key in ("tenants/t1/doc-a", "tenants/t1/doc-b/raw", "tenants/t1/other"):
            store.put(key, io.BytesIO(b"x"))
        assert [o.key for o in store.list("tenants/t1/doc-")] == [
            "tenants/t1/doc-a",
            "tenants/t1/doc-b/raw",
        ]

    def test_delete_is_idempotent(self, store: ObjectStore) -> None:
        key = tenant_key("t1", "doc", "raw")
        store.put(key, io.BytesIO(b"bye"))
        store.delete(key)
        store.delete(key)
        store.delete(tenant_key("t1", "never", "existed"))
        assert not store.exists(key)
        assert list(store.list("tenants/t1/")) == []

    def test_missing_key_raises_not_found(self, store: ObjectStore) -> None:
        key = tenant_key("t1", "missing")
        assert not store.exists(key)
        with pytest.raises(NotFound):
            store.get(key)
        with pytest.raises(NotFound):
            store.stat(key)
        with pytest.raises(NotFound), store.open(key):
            pass

    def test_open_streams(self, store: ObjectStore) -> None:
        data = _body(3 * MiB + 5, seed=2)
        key = tenant_key("t1", "stream")
        store.put(key, io.BytesIO(data), length=len(data))
        digest = hashlib.sha256()
        reads = 0
        with store.open(key) as body:
            while chunk := body.read(256 * 1024):
                assert len(chunk) <= 256 * 1024
                digest.update(chunk)
                reads += 1
        assert digest.digest() == hashlib.sha256(data).digest()
        assert reads >= 12

    def test_failed_upload_leaves_previous_object(self, store: ObjectStore) -> None:
        key = tenant_key("t1", "doc", "raw")
        store.put(key, io.BytesIO(b"good"), content_type="text/plain")
        data = _body(DEFAULT_PART_SIZE + 2 * MiB, seed=3)
        # Fails after the first S3 part was sent, so a multipart upload has to be aborted.
        with pytest.raises(ConnectionResetError):
            store.put(key, ChunkedStream(data, fail_after=DEFAULT_PART_SIZE + MiB))  # type: ignore[arg-type]
        assert store.get(key) == b"good"
        assert store.stat(key).content_type == "text/plain"
        new_key = tenant_key("t1", "new", "raw")
        with pytest.raises(ConnectionResetError):
            store.put(new_key, ChunkedStream(data, fail_after=MiB))  # type: ignore[arg-type]
        assert not store.exists(new_key)
        assert [o.key for o in store.list("tenants/t1/")] == [key]

    def test_short_stream_for_declared_length_is_refused(self, store: ObjectStore) -> None:
        key = tenant_key("t1", "short")
        with pytest.raises(ClientError):
            store.put(key, io.BytesIO(b"abc"), length=10)
        assert not store.exists(key)

    @pytest.mark.parametrize("key", ["../escape", "a/../../b", "/abs/key", "a\x00b", "a\\b", ""])
    def test_rejects_unsafe_keys(self, store: ObjectStore, key: str) -> None:
        with pytest.raises(ClientError):
            store.put(key, io.BytesIO(b"x"))
        with pytest.raises(ClientError):
            store.get(key)


# ---- S3 adapter specifics ----------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_s3_unreachable_endpoint_is_backend_unavailable() -> None:
    # Loopback only: nothing listens on the port, so the connection is refused at once.
    store = S3ObjectStore(
        ObjectStoreConfig(
            provider="s3",
            endpoint=f"127.0.0.1:{_closed_port()}",
            secret_key=SecretStr("x"),
            region="us-east-1",
        ),
        connect_timeout_s=1.0,
    )
    with pytest.raises(BackendUnavailable) as info:
        store.get("tenants/t1/x")
    assert isinstance(info.value.__cause__, MaxRetryError)


class _FailingClient:
    """A stand-in for the SDK client whose every call raises a given vendor error."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def bucket_exists(self, bucket: str) -> bool:
        return True

    def __getattr__(self, name: str) -> object:
        def fail(*args: object, **kwargs: object) -> None:
            raise self.exc

        return fail


def _s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message", "/bucket/key", "req", "host")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        (_s3_error("NoSuchKey"), NotFound),
        (_s3_error("AccessDenied"), ServiceError),
        (ServerError("server failed with HTTP status code 503", 503), BackendUnavailable),
        (MaxRetryError(None, "/", NewConnectionError(None, "refused")), BackendUnavailable),  # type: ignore[arg-type]
    ],
)
def test_s3_vendor_errors_are_wrapped(vendor: Exception, ours: type[Exception]) -> None:
    store = S3ObjectStore(ObjectStoreConfig(provider="s3"), client=_FailingClient(vendor))  # type: ignore[arg-type]
    with pytest.raises(ours) as info:
        store.stat("tenants/t1/x")
    assert info.value.__cause__ is vendor


class _RecordingResponse(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls: list[str] = []

    def close(self) -> None:
        self.calls.append("close")
        super().close()

    def release_conn(self) -> None:
        self.calls.append("release_conn")


class _OneObjectClient:
    def __init__(self) -> None:
        self.response = _RecordingResponse(b"abc")

    def bucket_exists(self, bucket: str) -> bool:
        return True

    def get_object(self, bucket: str, key: str) -> _RecordingResponse:
        return self.response


@pytest.mark.parametrize("fail", [False, True])
def test_s3_open_always_closes_and_releases_the_connection(fail: bool) -> None:
    client = _OneObjectClient()
    store = S3ObjectStore(ObjectStoreConfig(provider="s3"), client=client)  # type: ignore[arg-type]
    with (
        pytest.raises(RuntimeError) if fail else contextlib.nullcontext(),
        store.open("a/b") as body,
    ):
        assert body.read() == b"abc"
        if fail:
            raise RuntimeError("caller failed while reading")
    assert client.response.calls == ["close", "release_conn"]
