"""The vector-store collection behind a knowledge collection.

Its name carries a fingerprint of the embedder, so changing a collection's embedding model
writes to a new vector collection instead of mixing vectors of two models in one index. (The
Milvus adapter adds the deployment's ``collection_prefix`` in front.)
"""

from __future__ import annotations

import hashlib
import re

from kubemate.settings import CollectionConfig, EmbedderConfig, KubemateSettings
from kubemate.vectorstore.base import VectorStore
from kubemate.vectorstore.index import IndexSpec, resolve_index

_SAFE = re.compile(r"[^A-Za-z0-9_]")


def embedder_fingerprint(config: EmbedderConfig) -> str:
    return hashlib.sha256(f"{config.provider}:{config.model}".encode()).hexdigest()[:8]


def vector_collection(collection: str, embedder: EmbedderConfig) -> str:
    return f"{_SAFE.sub('_', collection)}_{embedder_fingerprint(embedder)}"


def index_of(config: CollectionConfig) -> IndexSpec:
    """The vector index a knowledge collection's template and expected size call for."""
    return resolve_index(config.index_template, config.expected_vectors)


def ensure_vector_collection(
    vectors: VectorStore, settings: KubemateSettings, collection_name: str, dimension: int
) -> str:
    """Make sure the vector collection of the knowledge collection ``collection_name`` exists,
    indexed by its template and analysed for its language; returns its name for the store.

    Raises UnknownCollection for a collection the settings do not configure."""
    config = settings.collection(collection_name)
    name = vector_collection(collection_name, config.embedder)
    vectors.ensure_collection(name, dimension, language=config.language, index=index_of(config))
    return name
