"""ObjectStore port and its adapters: filesystem (embedded default) and S3 via the minio SDK."""

from kubemate.objectstore.base import ObjectInfo, ObjectStore, tenant_key
from kubemate.objectstore.registry import build_object_store

__all__ = ["ObjectInfo", "ObjectStore", "build_object_store", "tenant_key"]
