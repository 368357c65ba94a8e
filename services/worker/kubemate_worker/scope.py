"""Whose work this is: a tenant, where each of its knowledge collections lives now, and what the
work embedded for it.

A tenant's collections may have been moved off the settings' embedder by a re-index
(:func:`kubemate.collections.active_vector_collection`), so nothing in the worker resolves a
collection through the settings alone: the indexing code is handed a :class:`TenantScope` and
asks it. The worker's shared clients (:class:`~kubemate_worker.context.WorkerContext`) stay the
same for every tenant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kubemate.collections import ActiveCollection
from kubemate.errors import UnknownCollection
from kubemate.settings import EmbedderConfig
from kubemate_worker.metering import EmbedUsage


@dataclass(frozen=True, slots=True)
class TenantScope:
    tenant_id: str
    # Every configured knowledge collection -> the vector collection it writes to and the
    # embedder whose vectors that holds.
    collections: Mapping[str, ActiveCollection]
    # The embedding tokens of this scope's work (written with the document, or by a flush).
    usage: EmbedUsage

    def active(self, collection: str) -> ActiveCollection:
        """Raises UnknownCollection for a collection the settings do not configure."""
        try:
            return self.collections[collection]
        except KeyError:
            # Worded as the settings word it (KubemateSettings.collection).
            raise UnknownCollection(f"collection {collection!r} is not configured") from None

    def vector_collection(self, collection: str) -> str:
        return self.active(collection).name

    def embedder(self, collection: str) -> EmbedderConfig:
        return self.active(collection).embedder
