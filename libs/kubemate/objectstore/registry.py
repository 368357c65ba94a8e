"""Picks an object store adapter by the ``provider`` setting: one entry per provider, no if/elif."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from kubemate.objectstore.base import ObjectStore
from kubemate.objectstore.filesystem import FilesystemObjectStore
from kubemate.objectstore.s3 import S3ObjectStore
from kubemate.settings import ObjectStoreConfig

ObjectStoreFactory = Callable[[ObjectStoreConfig], ObjectStore]

# Keys are the values of ObjectStoreConfig.provider; a unit test keeps the two in step.
OBJECT_STORES: Mapping[str, ObjectStoreFactory] = {
    "filesystem": lambda config: FilesystemObjectStore(config.root),
    "s3": S3ObjectStore,
}


def build_object_store(config: ObjectStoreConfig) -> ObjectStore:
    try:
        factory = OBJECT_STORES[config.provider]
    except KeyError:
        raise ValueError(f"no object store adapter for provider {config.provider!r}") from None
    return factory(config)
