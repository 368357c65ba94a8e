"""The model registry: model files in the object store, for clusters and machines without internet.

Layout under ``<prefix>/<name>/``: the file itself as ``blobs/<upload id>`` and a
``manifest.json`` naming the current blob with its format, size, SHA-256 and GGUF metadata. A
model exists once its manifest does. Each upload writes a new blob (the store commits an object
only when its stream was read to the end and passed the checks in
:class:`kubemate_model_manager.registry.formats.CheckingReader`), then the manifest, then removes
the blob it replaced: a failed upload leaves nothing behind and never damages the previous version.

Model files are platform-wide, not per tenant: keys do not carry a tenant.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from kubemate.errors import (
    InvalidModelFile,
    KubemateError,
    NotFound,
    PayloadTooLarge,
    UnknownModel,
    ValidationFailed,
)
from kubemate.logs import get_logger
from kubemate.models_config import RegistryConfig
from kubemate.objectstore.base import ObjectStore
from kubemate_model_manager.registry.formats import CheckingReader
from kubemate_model_manager.runtimes.base import ModelInfo

log = get_logger(__name__)

REGISTRY_RUNTIME = "registry"
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MANIFEST = "manifest.json"


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name) or ".." in name:
        raise ValidationFailed(
            "a registry model name is 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    name: str
    format: str
    blob_key: str
    size: int
    sha256: str
    uploaded_at: str
    uploaded_by: str = ""
    family: str | None = None
    quantization: str | None = None
    parameter_size: str | None = None
    context_length: int | None = None

    @property
    def filename(self) -> str:
        """The file name runtimes expect (llama.cpp and vLLM look at the extension)."""
        return f"{self.name}.{self.format}"

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            runtime=REGISTRY_RUNTIME,
            size=self.size,
            digest=f"sha256:{self.sha256}",
            family=self.family,
            quantization=self.quantization,
            parameter_size=self.parameter_size,
            format=self.format,
            modified_at=datetime.fromisoformat(self.uploaded_at),
        )


class ModelRegistry:
    """Blocking (object store calls): run it in a worker thread from async code."""

    def __init__(self, store: ObjectStore, config: RegistryConfig) -> None:
        self._store = store
        self._config = config
        self._prefix = config.prefix.strip("/")

    def _key(self, name: str, *parts: str) -> str:
        return "/".join((self._prefix, check_model_name(name), *parts))

    def upload(
        self,
        name: str,
        read: Callable[[int], bytes],
        *,
        length: int = -1,
        expected_sha256: str | None = None,
        uploaded_by: str = "",
    ) -> RegistryEntry:
        """Store a model file read through ``read(n)``. Raises InvalidModelFile (415),
        CorruptModelFile / ChecksumMismatch (422), PayloadTooLarge (413); nothing is stored then.
        """
        check_model_name(name)
        if length == 0:
            raise InvalidModelFile("the upload is empty")
        if length > self._config.max_upload_bytes:
            raise PayloadTooLarge(f"model files are limited to {self._config.max_upload_bytes} B")
        reader = CheckingReader(
            read,
            length=length,
            expected_sha256=expected_sha256,
            header_limit=self._config.header_limit_bytes,
            max_bytes=self._config.max_upload_bytes,
        )
        blob_key = self._key(name, "blobs", uuid.uuid4().hex)
        self._store.put(blob_key, reader, length)  # type: ignore[arg-type]
        checked = reader.result
        if checked is None:  # the store stopped reading before the end: never expected
            self._store.delete(blob_key)
            raise ValidationFailed("the upload ended before its end was read")
        header = checked.gguf
        entry = RegistryEntry(
            name=name,
            format=checked.format,
            blob_key=blob_key,
            size=checked.size,
            sha256=checked.sha256,
            uploaded_at=datetime.now(UTC).isoformat(),
            uploaded_by=uploaded_by,
            family=header.family if header else None,
            quantization=header.quantization if header else None,
            parameter_size=header.parameter_size if header else None,
            context_length=header.context_length if header else None,
        )
        previous = self._find(name)
        try:
            body = json.dumps(asdict(entry)).encode()
            self._store.put(
                self._key(name, _MANIFEST), io.BytesIO(body), len(body), "application/json"
            )
        except BaseException:
            self._store.delete(blob_key)
            raise
        if previous is not None and previous.blob_key != blob_key:
            with suppress(KubemateError):
                self._store.delete(previous.blob_key)
        log.info(
            "registry.model_uploaded",
            model=name,
            format=entry.format,
            bytes=entry.size,
            sha256=entry.sha256,
        )
        return entry

    def _find(self, name: str) -> RegistryEntry | None:
        try:
            raw = self._store.get(self._key(name, _MANIFEST))
        except NotFound:
            return None
        return RegistryEntry(**json.loads(raw))

    def get(self, name: str) -> RegistryEntry:
        entry = self._find(name)
        if entry is None:
            raise UnknownModel(f"model {name!r} is not in the registry")
        return entry

    def list(self) -> list[RegistryEntry]:
        entries = []
        for obj in self._store.list(self._prefix + "/"):
            parts = obj.key.split("/")
            if len(parts) == 3 and parts[2] == _MANIFEST:
                found = self._find(parts[1])
                if found is not None:
                    entries.append(found)
        return entries

    def open(self, entry: RegistryEntry) -> AbstractContextManager[BinaryIO]:
        return self._store.open(entry.blob_key)

    def delete(self, name: str) -> RegistryEntry:
        entry = self.get(name)
        # The manifest first: once it is gone the model is gone, even if the blob delete fails.
        self._store.delete(self._key(name, _MANIFEST))
        self._store.delete(entry.blob_key)
        log.info("registry.model_deleted", model=name)
        return entry

    def orphans(self) -> Iterator[str]:
        """Blob keys no manifest names (left by a crash between blob and manifest)."""
        current = {e.blob_key for e in self.list()}
        for obj in self._store.list(self._prefix + "/"):
            if "/blobs/" in obj.key and obj.key not in current:
                yield obj.key
