"""The Reranker port: registry, the HTTP adapter's two API shapes, and the cross-encoder code
path with a tiny randomly initialised BERT.

No cross-encoder weights exist in any registry reachable here, so the cross-encoder test builds
a 2-layer BERT with random weights and a 20-word vocabulary in tmp_path: it proves loading,
pairing and scoring work, not ranking quality (a mounted model provides that in production).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubemate.errors import InferenceError, NotACrossEncoder, RerankerModelMissing, UnknownModel
from kubemate.inference.registry import UnknownProvider
from kubemate.rerank import RerankerConfig, build_reranker
from kubemate.rerank.cross_encoder import check_cross_encoder_dir
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
    # The vocabulary as a mapping: transformers 5 ignores a ``vocab_file`` argument and would
    # read every word as [UNK], leaving a model that only sees each pair's length.
    vocab = {word: i for i, word in enumerate(words)}
    transformers.BertTokenizer(vocab=vocab).save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,
        # Wider random weights than BERT's 0.02, which scores every pair within 1e-5 of the
        # others: too close for an order to survive float noise.
        initializer_range=0.2,
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


# ---- the cross-encoder from the model registry ---------------------------------------------


def _registry_cache(tmp_path: Path, models: dict[str, dict[str, bytes]]) -> object:
    """The model registry on the filesystem object store (real adapters), holding ``models``
    as ZIPs written by the model manager's own upload code, and a cache reading it."""
    import io

    from kubemate.models_config import RegistryConfig
    from kubemate.objectstore.filesystem import FilesystemObjectStore
    from kubemate.registry_cache import RegistryModelCache
    from kubemate_model_manager.registry.store import ModelRegistry
    from tests.unit.test_registry_cache import zip_of

    store = FilesystemObjectStore(tmp_path / "objects")
    registry = ModelRegistry(store, RegistryConfig())
    for name, files in models.items():
        data = zip_of(files)
        registry.upload(name, io.BytesIO(data).read, length=len(data))
    return RegistryModelCache(store, RegistryConfig(), tmp_path / "cache")


def _config_json(architecture: str, labels: int = 1) -> bytes:
    id2label = {str(i): f"LABEL_{i}" for i in range(labels)}
    return json.dumps({"architectures": [architecture], "id2label": id2label}).encode()


@pytest.mark.parametrize(
    "files, match",
    [
        ({"vocab.txt": b"[PAD]\n"}, "no config.json"),
        ({"config.json": b"not json"}, "unreadable config.json"),
        ({"config.json": _config_json("BertModel")}, "not a \\*ForSequenceClassification"),
        ({"config.json": _config_json("BertForSequenceClassification", 3)}, "3 output labels"),
    ],
    ids=["no-config", "bad-config", "bi-encoder", "three-labels"],
)
async def test_a_registry_model_that_is_not_a_cross_encoder_is_refused_before_loading(
    tmp_path: Path, files: dict[str, bytes], match: str
) -> None:
    cache = _registry_cache(tmp_path, {"not-ce": files})
    config = RerankerConfig(provider="cross_encoder", registry_model="not-ce")
    reranker = build_reranker(config, model_files=cache)  # type: ignore[arg-type]
    assert reranker is not None and reranker.model == "not-ce"
    with pytest.raises(NotACrossEncoder, match=match) as caught:
        await reranker.rerank("q", ["p"])
    assert caught.value.status == 503 and caught.value.type_slug == "not-a-cross-encoder"


async def test_a_registry_model_that_is_absent_is_missing(tmp_path: Path) -> None:
    cache = _registry_cache(tmp_path, {})
    config = RerankerConfig(provider="cross_encoder", registry_model="absent")
    for files in (cache, None):  # no such model; no registry at all
        reranker = build_reranker(config, model_files=files)  # type: ignore[arg-type]
        assert reranker is not None
        with pytest.raises(RerankerModelMissing) as caught:
            await reranker.rerank("q", ["p"])
        assert caught.value.type_slug == "reranker-model-missing"


def test_check_accepts_a_one_label_classifier(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_bytes(_config_json("XLMRobertaForSequenceClassification"))
    check_cross_encoder_dir(tmp_path, "bge-reranker")  # raises nothing
