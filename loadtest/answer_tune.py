"""Tuning quoted answers offline: the retrieved chunks of every question, collected once from a
running stack, replayed through :mod:`kubemate_retrieval.answers` in-process.

A quoted answer is a function of the question, its retrieved chunks and the settings
(``AnswersConfig``), plus the collection's embedder for the sentences. ``collect`` asks
``POST /v1/query`` of the stack (as ``/v1/chat`` retrieves: same pipeline, ``top_k`` 5) for
every question of a dataset, of the tenant with its gold paragraph and of the other one
(the tenants and their contents are :mod:`answer_bench`'s); ``replay`` then answers each from
those chunks with any settings (``--set name=value``), embedding sentences with the real
embedder once (a disk cache keyed by the text) and printing ``answer_bench``'s figures. A
setting is compared in seconds instead of a 20-minute stack run.

Questions are split in two halves by article (``answer_bench.split_of``): settings are chosen on
the ``tune`` half, and the figures reported in BENCHMARKS.md are the stack's on the ``report``
half (``answer_bench.py --split report``). (CMRC 2018 *train* is the better tuning set but was
not obtainable here: the mirrored repository lacks the file's blob.)

Run::

    .venv/bin/python loadtest/answer_tune.py collect --cmrc ../shared/datasets/cmrc2018_trial \\
        --out /tmp/cmrc-hits.jsonl
    .venv/bin/python loadtest/answer_tune.py replay --cmrc ../shared/datasets/cmrc2018_trial \\
        --hits /tmp/cmrc-hits.jsonl --split tune --set min_evidence_zh=0.2
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_bench import (
    DEFAULT_CMRC,
    Answer,
    Dataset,
    Question,
    ingest,
    load_cmrc,
    load_squad,
    other_tenant,
    score,
    split_of,
    stack,
    tenant_of,
)
from scifact_bench import request

from kubemate.auth import Role, issue_token
from kubemate.inference.registry import build_embedder
from kubemate.settings import KubemateSettings
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.answers.config import AnswersConfig
from kubemate_retrieval.answers.extractive import find_evidence, quote_pieces
from kubemate_retrieval.answers.refusal import too_weak

REFUSAL = {"zh": "无法回答", "en": "cannot answer"}


def load(args: argparse.Namespace) -> Dataset:
    if args.squad_json:
        return load_squad(args.squad_json)
    return load_cmrc(args.cmrc)


# ---- collect ------------------------------------------------------------------------------------


def collect(args: argparse.Namespace, url: str) -> None:
    dataset = load(args)
    with httpx.Client(timeout=300.0, trust_env=False) as http:
        if args.skip_ingest:
            tokens_of = {
                t: issue_token(KubemateSettings().auth, t, roles=(Role.ADMIN,))
                for t in {tenant_of(dataset, p, args.tenant_prefix) for p in dataset.paragraphs}
            }
        else:
            tokens_of = ingest(http, url, dataset, args.tenant_prefix)
        questions = [
            q
            for q in dataset.questions
            if args.split == "all" or split_of(dataset, q.paragraph) == args.split
        ]

        def hits_of(job: tuple[Question, bool]) -> dict[str, Any]:
            q, answerable = job
            home = tenant_of(dataset, q.paragraph, args.tenant_prefix)
            tenant = home if answerable else other_tenant(home)
            body = {
                "question": q.text,
                "collection": dataset.collection,
                "top_k": args.top_k,
                "cache": False,
            }
            headers = {"Authorization": f"Bearer {tokens_of[tenant]}"}
            hits = request(http, "POST", url + "/v1/query", json=body, headers=headers).json()
            return {"id": q.id, "answerable": answerable, "hits": hits["hits"]}

        started = time.perf_counter()
        jobs = [(q, answerable) for q in questions for answerable in (True, False)]
        with args.out.open("w", encoding="utf-8") as out, ThreadPoolExecutor(args.workers) as pool:
            for n, row in enumerate(pool.map(hits_of, jobs), 1):
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                if n % 200 == 0:
                    print(f"  {n} queries, {time.perf_counter() - started:.0f} s", flush=True)


# ---- replay -------------------------------------------------------------------------------------


class CachedEmbedder:
    """The collection's real embedder, each text embedded once (cached on disk by its text)."""

    def __init__(self, inner: Any, path: Path) -> None:
        self._inner = inner
        self._path = path
        self._vectors: dict[str, list[float]] = {}
        if path.exists():
            self._vectors = json.loads(path.read_text())
        self._dirty = False

    @staticmethod
    def _key(kind: str, text: str) -> str:
        return kind + hashlib.sha1(text.encode()).hexdigest()

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        missing = [t for t in dict.fromkeys(texts) if self._key("p", t) not in self._vectors]
        if missing:
            for text, vector in zip(missing, await self._inner.embed(missing), strict=True):
                self._vectors[self._key("p", text)] = vector
            self._dirty = True
        return [self._vectors[self._key("p", t)] for t in texts]

    async def embed_query(self, text: str) -> list[float]:
        key = self._key("q", text)
        if key not in self._vectors:
            self._vectors[key] = await self._inner.embed_query(text)
            self._dirty = True
        return self._vectors[key]

    def save(self) -> None:
        if self._dirty:
            self._path.write_text(json.dumps(self._vectors))
            self._dirty = False


def embedder_for(dataset: Dataset, cache: Path) -> CachedEmbedder:
    """The dataset's collection's embedder, as the stack's settings configure it."""
    collection = KubemateSettings().collections[dataset.collection]
    return CachedEmbedder(build_embedder(collection.embedder), cache)


def overrides(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, value = pair.split("=", 1)
        out[name] = json.loads(value)
    return out


async def replay_one(
    q: Question,
    hits: list[dict[str, Any]],
    language: str,
    embedder: CachedEmbedder | None,
    config: AnswersConfig,
) -> dict[str, Any]:
    search_hits = [
        SearchHit(
            chunk_id=h["chunk_id"],
            document_id=h["document_id"],
            chunk_text=h["text"],
            source=h["source"],
            title=h["title"],
            position=h["position"],
            page=h["page"],
            score=h["score"],
        )
        for h in hits
    ]
    vector = await embedder.embed_query(q.text) if embedder else None
    evidence = await find_evidence(
        q.text,
        search_hits,
        language=language,  # type: ignore[arg-type]
        embedder=embedder,  # type: ignore[arg-type]
        query_vector=vector,
        config=config,
    )
    cited = {c.label for c in evidence.quotes}
    refused = not search_hits or too_weak(evidence, language, config)  # type: ignore[arg-type]
    answer = REFUSAL[language] if refused else "".join(quote_pieces(evidence, language, config))  # type: ignore[arg-type]
    return {
        "answer": answer,
        "cannot_answer": refused,
        "evidence": evidence.lexical,
        "citations": [
            {"source": h.source, "cited": not refused and i in cited}
            for i, h in enumerate(search_hits, 1)
        ],
        "timings": {},
    }


async def replay(args: argparse.Namespace) -> dict[str, float]:
    dataset = load(args)
    config = AnswersConfig(**overrides(args.set))
    by_id = {q.id: q for q in dataset.questions}
    rows = [json.loads(line) for line in args.hits.open(encoding="utf-8")]
    wanted = [
        r
        for r in rows
        if r["id"] in by_id
        and (args.split == "all" or split_of(dataset, by_id[r["id"]].paragraph) == args.split)
    ]
    embedder = None if args.lexical_only else embedder_for(dataset, args.cache)
    answers = []
    for row in wanted:
        q = by_id[row["id"]]
        body = await replay_one(q, row["hits"], dataset.language, embedder, config)
        answers.append(Answer(q, row["answerable"], "extractive", body, 0.0, 0.0))
    if embedder is not None:
        embedder.save()
    figures = score(dataset, answers)
    keep = (
        "questions",
        "exact_match",
        "f1",
        "contains_gold",
        "gold_cited",
        "at_most_two_sentences",
        "repeated_ngram_answers",
        "cannot_answer_recall",
        "answerable_refused",
    )
    print(" ".join(f"{k}={figures[k]:.3f}" for k in keep), flush=True)
    if args.misses:
        for a in answers:
            if a.answerable and not a.body["cannot_answer"]:
                print(f"- {a.question.text} | gold {a.question.answers[0]} | {a.body['answer']}")
    return figures


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("collect", "replay"):
        p = sub.add_parser(name)
        p.add_argument("--cmrc", type=Path, default=DEFAULT_CMRC)
        p.add_argument("--squad-json", type=Path, help="an English SQuAD-format file instead")
        p.add_argument("--tenant-prefix", default="answer-bench")
    c = sub.choices["collect"]
    c.add_argument("--url", help="a running stack (default: start one)")
    c.add_argument("--data-dir", type=Path)
    c.add_argument("--skip-ingest", action="store_true")
    c.add_argument("--top-k", type=int, default=5)
    c.add_argument("--split", choices=("tune", "report", "all"), default="tune")
    c.add_argument("--workers", type=int, default=2, help="concurrent queries")
    c.add_argument("--start-timeout", type=float, default=600.0)
    c.add_argument("--out", type=Path, required=True)
    r = sub.choices["replay"]
    r.add_argument("--hits", type=Path, required=True)
    r.add_argument("--split", choices=("tune", "report", "all"), default="tune")
    r.add_argument("--set", action="append", default=[], metavar="NAME=JSON")
    r.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "answer-vectors")
    r.add_argument("--lexical-only", action="store_true")
    r.add_argument("--misses", action="store_true", help="print every answered question")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "replay":
        asyncio.run(replay(args))
        return
    with stack(args, prefix="answer-tune-") as url:
        collect(args, url)


if __name__ == "__main__":
    main()
