"""The Reranker port: registry, the HTTP adapter's two API shapes, and the cross-encoder code
path with a tiny randomly initialised BERT.

No cross-encoder weights exist in any registry reachable here, so the cross-encoder test builds
a 2-layer BERT with random weights and a 20-word vocabulary in tmp_path: it proves loading,
pairing and scoring work, not ranking quality (a mounted model provides that in production).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kubemate.errors import InferenceError, UnknownModel
from kubemate.inference.registry import UnknownProvider
from kubemate.rerank import RerankerConfig, build_reranker
from kubemate.rerank.http import HttpReranker, request_body, scores_from_answer
from kubemate.rerank.llm_likelihood import log_softmax_at


def test_registry_builds_the_configured_adapter() -> None:
    assert build_reranker(RerankerConfig(provider="none")) is None
    http = build_reranker(RerankerConfig(provider="http", base_url="http://tei:8080", api="tei"))
    assert isinstance(http, HttpReranker)
    with pytest.raises(UnknownProvider):
        build_reranker(RerankerConfig.model_construct(provider="nope"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base_url"):
        build_reranker(RerankerConfig(provider="http"))


def test_tei_request_and_answer() -> None:
    body = request_body("tei", "ignored", "q", ["a", "b"])
    assert body == {"query": "q", "texts": ["a", "b"], "truncate": True}
    # TEI answers a bare list, best first (text only with return_text); scores come back in
    # the passages' order.
    answer = [{"index": 1, "score": 0.9, "text": "b"}, {"index": 0, "score": 0.1}]
    assert scores_from_answer(answer, 2) == [0.1, 0.9]


def test_vllm_request_and_answer() -> None:
    body = request_body("vllm", "BAAI/bge-reranker-base", "q", ["a", "b"])
    assert body == {
        "model": "BAAI/bge-reranker-base",
        "query": "q",
        "documents": ["a", "b"],
        "top_n": 2,
    }
    # vLLM's RerankResponse: id, model, usage, and each result with its document.
    answer = {
        "id": "rerank-1",
        "model": "BAAI/bge-reranker-base",
        "usage": {"prompt_tokens": 12, "total_tokens": 12},
        "results": [
            {"index": 1, "document": {"text": "b"}, "relevance_score": 0.98},
            {"index": 0, "document": {"text": "a"}, "relevance_score": 0.02},
        ],
    }
    assert scores_from_answer(answer, 2) == [0.02, 0.98]


def test_cohere_style_request_and_answer() -> None:
    body = request_body("cohere", "bge-reranker-base", "q", ["a", "b", "c"])
    assert body["model"] == "bge-reranker-base" and body["return_documents"] is False
    assert body["documents"] == ["a", "b", "c"] and body["top_n"] == 3
    assert "model" not in request_body("cohere", "", "q", ["a"])
    answer = {
        "id": "x",
        "results": [
            {"index": 2, "relevance_score": 0.7},
            {"index": 0, "relevance_score": 0.5},
            {"index": 1, "relevance_score": 0.01},
        ],
    }
    assert scores_from_answer(answer, 3) == [0.5, 0.01, 0.7]


def test_an_answer_in_another_dialect_is_read() -> None:
    # A proxy asked in Cohere's dialect that answers in TEI's, or the other way round.
    assert scores_from_answer([{"index": 0, "relevance_score": 2.0}], 1) == [2.0]
    assert scores_from_answer({"results": [{"index": 0, "score": -1.5}]}, 1) == [-1.5]


@pytest.mark.parametrize(
    "answer",
    [
        {"results": []},  # nothing scored
        {"data": [{"index": 0, "score": 1.0}, {"index": 1, "score": 1.0}]},  # /score, not /rerank
        [{"index": 0}, {"index": 1, "score": 1.0}],  # no score
        [{"index": 5, "score": 1.0}, {"index": 0, "score": 1.0}],  # index out of range
        [{"index": 0, "score": 1.0}],  # a passage without a score
        {"results": [{"index": 0, "relevance_score": float("nan")}, {"index": 1, "score": 0}]},
        {"results": [{"index": "x", "relevance_score": 1.0}]},
        "not json",
    ],
)
def test_malformed_answers_are_inference_errors(answer: object) -> None:
    with pytest.raises(InferenceError):
        scores_from_answer(answer, 2)


def test_log_softmax_at() -> None:
    np = pytest.importorskip("numpy")
    logits = np.array([0.0, 0.0, np.log(2.0)], dtype=np.float32)
    assert log_softmax_at(logits, 2) == pytest.approx(np.log(0.5), abs=1e-6)


def _tiny_cross_encoder(directory: Path) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words += [
        "the",
        "a",
        "cat",
        "cats",
        "dog",
        "sleep",
        "sleeps",
        "bank",
        "rate",
        "policy",
        "raised",
        "percent",
        "hours",
        "day",
    ]
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    transformers.BertTokenizer(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
    )
    transformers.BertForSequenceClassification(config).save_pretrained(directory)
    return directory


@pytest.mark.slow  # imports torch and sentence-transformers
async def test_cross_encoder_scores_pairs_from_a_local_model(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    path = _tiny_cross_encoder(tmp_path)
    reranker = build_reranker(RerankerConfig(provider="cross_encoder", model=str(path)))
    assert reranker is not None and reranker.model == path.name
    passages = ["the cat sleeps", "the bank raised the rate", "dog"]
    scores = await reranker.rerank("cat sleep", passages)
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    # Deterministic: the same pair scores the same, whatever else is in the call.
    assert (await reranker.rerank("cat sleep", passages[:1]))[0] == pytest.approx(scores[0])
    assert await reranker.rerank("cat sleep", []) == []
    await reranker.aclose()


@pytest.mark.slow
async def test_cross_encoder_without_a_model_is_unknown_model(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    reranker = build_reranker(
        RerankerConfig(provider="cross_encoder", model=str(tmp_path / "missing"))
    )
    assert reranker is not None
    with pytest.raises(UnknownModel):
        await reranker.rerank("q", ["p"])
