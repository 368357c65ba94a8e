"""Threads of in-process torch calls: one per call by default in retrieval, set before the
model's first call, and never for providers that do not compute with torch here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kubemate.inference.torch_threads import limit_torch_threads
from kubemate.settings import EmbedderConfig
from kubemate_retrieval.models import LoadedModels
from kubemate_retrieval.settings import RetrievalSettings


@pytest.fixture(autouse=True)
def restored_threads() -> Iterator[int]:
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_torch_providers_get_the_threads_asked_for() -> None:
    torch.set_num_threads(2)
    limit_torch_threads("sentence_transformers", 1)
    assert torch.get_num_threads() == 1
    limit_torch_threads("cross_encoder", 3)
    assert torch.get_num_threads() == 3


def test_zero_and_other_providers_leave_torch_alone() -> None:
    torch.set_num_threads(2)
    limit_torch_threads("sentence_transformers", 0)
    limit_torch_threads("ollama", 1)
    limit_torch_threads("hash", 1)
    assert torch.get_num_threads() == 2


async def test_retrieval_encodes_queries_on_one_thread_by_default(tmp_path: Path) -> None:
    """The packaged MiniLM, loaded as the retrieval service loads a collection's embedder."""
    torch.set_num_threads(2)
    settings = RetrievalSettings(data_dir=tmp_path)
    assert settings.retrieval.torch_threads == 1
    models = LoadedModels(settings)
    embedder = await models.embedder(EmbedderConfig())
    try:
        assert torch.get_num_threads() == 1
        [vector] = await embedder.embed(["one thread is enough for a short question"])
        assert len(vector) == 384
    finally:
        await embedder.aclose()
