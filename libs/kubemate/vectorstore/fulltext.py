"""BM25 full-text search in Milvus: which engines have it, and the analyzer of each language.

Milvus 2.5+ and Milvus Lite 3.x fill a SPARSE_FLOAT_VECTOR field from a text field through a
BM25 function; Milvus 2.3 and 2.4 have no such function, and the older C++ Milvus Lite (2.x)
none either, so collections there get no sparse field and every search is dense.
"""

from __future__ import annotations

import re
from typing import Any

SPARSE_FIELD = "sparse"
TEXT_FIELD = "chunk_text"
BM25_FUNCTION = "chunk_text_bm25"

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")
_LITE_PREFIX = "milvus_lite"

# The same parameters work on both engines: Milvus 2.5+ reads them as a custom analyzer (its
# standard tokenizer and lowercase filter make up its "standard" analyzer), Milvus Lite as its
# regex tokenizer (which lowercases) or jieba. Milvus's named analyzers ({"type": "chinese"})
# are unknown to Milvus Lite, so none is used.
_ANALYZERS: dict[str, dict[str, Any]] = {
    "en": {"tokenizer": "standard", "filter": ["lowercase"]},
    "zh": {"tokenizer": "jieba", "filter": ["lowercase"]},
}


def analyzer_params(language: str) -> dict[str, Any]:
    """The BM25 analyzer of a collection's text, from its language."""
    try:
        return dict(_ANALYZERS[language])
    except KeyError:
        raise ValueError(
            f"no full-text analyzer for language {language!r}: one of {sorted(_ANALYZERS)}"
        ) from None


def engine_supports_bm25(server_version: str) -> bool:
    """Whether a server that reports ``server_version`` has the BM25 function.

    Milvus Lite reports ``milvus_lite-X.Y.Z`` (BM25 from 3.0, its pure-Python generation);
    Milvus reports ``vX.Y.Z`` (BM25 from 2.5). Unknown strings count as "no": a dense search
    is always correct, a BM25 schema the server cannot create is not."""
    version = server_version.strip()
    lite = version.startswith(_LITE_PREFIX)
    match = _VERSION.search(version)
    if match is None:
        return False
    major, minor = int(match.group(1)), int(match.group(2))
    return major >= 3 if lite else (major, minor) >= (2, 5)


def has_bm25(description: dict[str, Any]) -> bool:
    """Whether a collection (as ``describe_collection`` shows it) fills our sparse field from
    its text by BM25: collections created before full-text search, or on an engine without it,
    do not."""
    fields = {f.get("name") for f in description.get("fields", [])}
    if SPARSE_FIELD not in fields:
        return False
    for function in description.get("functions", []) or []:
        kind = function.get("type")
        name = getattr(kind, "name", str(kind))
        if name.upper().endswith("BM25") and SPARSE_FIELD in function.get("output_field_names", []):
            return True
    return False
