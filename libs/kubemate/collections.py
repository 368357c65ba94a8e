"""Names of the Milvus collections behind a knowledge collection.

The physical name carries a fingerprint of the embedder, so changing a collection's embedding
model writes to a new Milvus collection instead of mixing vectors of two models in one index.
"""

from __future__ import annotations

import hashlib
import re

from kubemate.settings import EmbedderConfig

_SAFE = re.compile(r"[^A-Za-z0-9_]")


def embedder_fingerprint(config: EmbedderConfig) -> str:
    return hashlib.sha256(f"{config.provider}:{config.model}".encode()).hexdigest()[:8]


def physical_collection(prefix: str, collection: str, embedder: EmbedderConfig) -> str:
    return f"{_SAFE.sub('_', prefix)}_{_SAFE.sub('_', collection)}_{embedder_fingerprint(embedder)}"
