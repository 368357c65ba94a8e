"""The vector-store collection behind a knowledge collection.

Its name carries a fingerprint of the embedder, so changing a collection's embedding model
writes to a new vector collection instead of mixing vectors of two models in one index. (The
Milvus adapter adds the deployment's ``collection_prefix`` in front.)
"""

from __future__ import annotations

import hashlib
import re

from kubemate.settings import EmbedderConfig

_SAFE = re.compile(r"[^A-Za-z0-9_]")


def embedder_fingerprint(config: EmbedderConfig) -> str:
    return hashlib.sha256(f"{config.provider}:{config.model}".encode()).hexdigest()[:8]


def vector_collection(collection: str, embedder: EmbedderConfig) -> str:
    return f"{_SAFE.sub('_', collection)}_{embedder_fingerprint(embedder)}"
