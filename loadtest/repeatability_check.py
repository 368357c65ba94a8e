"""Do two fresh embedded stacks give the same quoted answer to the same question?

Starts ``kubemate up`` on a new temporary data directory, uploads the same SciFact abstracts
in the same order with the same concurrency (batches uploaded by several threads, so the
documents finish ingestion in whatever order the workers reach them), asks the same questions
with ``answer_mode=extractive``, stops the stack, and does it all again on a second fresh
directory. Then prints how many answers and citation lists differ between the two, and which.

A few abstracts are uploaded twice, under a second name and with a trailing newline (the
ingest service keeps one document per content hash), as an analyst uploading two revisions of
a file would: their chunks tie exactly on every score, which is where an order left to the
engine (insertion order, i.e. ingestion order) shows first.

Quoted answers never touch the LLM, so any difference is retrieval's or the answer builder's.
Exits 1 if anything differs. Besides answers and citation lists it counts the questions whose
cited chunks scored differently at all: dense cosines may differ in their last bit between
stacks (a chunk's vector depends on the texts batched beside it, which a batch pads to its
longest). That can only swap chunks scored equal to the last bit, i.e. copies of one text in
practice, and copies are scored alike (``kubemate.vectorstore.milvus.scored_by_text``).

Milvus Lite 3.2 (the embedded stack's engine) weighs BM25 terms per segment, and which chunks
share a segment depends on when the writer flushed; ``kubemate up`` patches it to weigh them
over the whole collection (``kubemate_cli.embedded.lite_bm25``). To stress that, flush often:
``--env KUBEMATE_MILVUS__LITE_FLUSH_MAX_ROWS=8`` (segments in
``<data dir>/milvus/collections/*/partitions/*/data/``).

Run (2 busy cores: ~3 min per stack)::

    .venv/bin/python loadtest/repeatability_check.py --out repeat.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from answer_bench import stack_env
from scifact_bench import COLLECTION, TENANT, embedded_stack, ingest, request, wait_indexed

from kubemate.auth import Role, issue_token
from kubemate.settings import KubemateSettings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCIFACT = REPO.parent / "shared" / "datasets" / "scifact"


def load(
    scifact: Path, documents: int, questions: int, duplicates: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(upload name -> text, query id -> question): the first ``documents`` abstracts the
    qrels name, the first ``duplicates`` of them again as ``<id>-copy``, and ``questions``
    claims, those about the uploaded abstracts first."""
    corpus: dict[str, str] = {}
    with (scifact / "corpus.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            corpus[row["_id"]] = f"{row['title']}\n\n{row['text']}"
    claims: dict[str, str] = {}
    with (scifact / "queries.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            claims[row["_id"]] = row["text"]
    relevant: dict[str, list[str]] = {}
    for name in ("train.tsv", "test.tsv"):
        for line in (scifact / "qrels" / name).read_text().splitlines()[1:]:
            query, doc, _ = line.split("\t")
            relevant.setdefault(query, []).append(doc)
    chosen: list[str] = []
    for docs in relevant.values():
        for doc in docs:
            if doc not in chosen and len(chosen) < documents:
                chosen.append(doc)
    uploads = {cid: corpus[cid] for cid in chosen}
    uploads |= {f"{cid}-copy": corpus[cid] + "\n" for cid in chosen[:duplicates]}
    about = [q for q, docs in relevant.items() if set(docs) <= set(chosen)]
    rest = [q for q in claims if q not in about]
    asked = (about + rest)[:questions]
    return uploads, {q: claims[q] for q in asked}


def run_once(
    args: argparse.Namespace, uploads: dict[str, str], questions: dict[str, str]
) -> dict[str, Any]:
    """One fresh stack: upload, wait, ask; returns question id -> what the answer says."""
    data_dir = Path(tempfile.mkdtemp(prefix="repeatability-"))
    print(f"starting kubemate up in {data_dir}", flush=True)
    token = issue_token(KubemateSettings().auth, TENANT, roles=(Role.ADMIN,))
    headers = {"Authorization": f"Bearer {token}"}
    with (
        embedded_stack(data_dir, stack_env() | dict(args.env), args.start_timeout) as url,
        httpx.Client(headers=headers, timeout=600.0, trust_env=False) as http,
    ):
        ingest(http, url, uploads, args.batch, args.workers)
        wait_indexed(http, url, len(uploads), args.index_timeout)
        answers: dict[str, Any] = {}
        for qid, text in questions.items():
            body = {
                "question": text,
                "collection": COLLECTION,
                "answer_mode": "extractive",
                "cache": False,
                "top_k": args.top_k,
            }
            if args.search:
                body["hybrid"] = args.search == "hybrid"
            out = request(http, "POST", url + "/v1/chat", json=body).json()
            answers[qid] = {
                "answer": out["answer"],
                "cannot_answer": out["cannot_answer"],
                # Document ids are random per stack: a citation is named by its file and place.
                "citations": [
                    [c["index"], c["source"], c["position"], c["cited"]] for c in out["citations"]
                ],
                "scores": [c["score"] for c in out["citations"]],
            }
        print(f"  asked {len(answers)} questions", flush=True)
        return answers


def compare(first: dict[str, Any], second: dict[str, Any]) -> dict[str, list[str]]:
    """Question ids whose answer text differs, whose citation list differs, and whose chunks
    scored differently (not only equal scores in another order)."""
    return {
        "answer": [q for q in first if first[q]["answer"] != second[q]["answer"]],
        "citations": [q for q in first if first[q]["citations"] != second[q]["citations"]],
        "scores": [q for q in first if first[q]["scores"] != second[q]["scores"]],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scifact", type=Path, default=DEFAULT_SCIFACT)
    parser.add_argument("--documents", type=int, default=30)
    parser.add_argument("--duplicates", type=int, default=3, help="abstracts uploaded twice")
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4, help="files per upload request")
    parser.add_argument("--workers", type=int, default=4, help="concurrent upload requests")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument(
        "--search", choices=("dense", "hybrid"), help="default: the stack's (hybrid)"
    )
    parser.add_argument(
        "--env",
        type=lambda text: tuple(text.split("=", 1)),
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of both stacks, e.g. KUBEMATE_MILVUS__LITE_FLUSH_INTERVAL_S=60",
    )
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--index-timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, help="both runs' answers as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    uploads, questions = load(args.scifact, args.documents, args.questions, args.duplicates)
    print(f"{len(uploads)} documents, {len(questions)} questions", flush=True)
    runs = [run_once(args, uploads, questions) for _ in range(2)]
    differ = compare(*runs)
    if args.out:
        args.out.write_text(json.dumps({"runs": runs, "differ": differ}, indent=1))
    for q in sorted(set(differ["answer"]) | set(differ["citations"])):
        print(f"--- {q}: {questions[q]}")
        for run in runs:
            print(f"  {run[q]['answer'][:160]!r}")
            print(f"  {run[q]['citations']}")
            print(f"  scores {[round(score, 6) for score in run[q]['scores']]}")
    print(
        f"of {len(questions)} questions: {len(differ['answer'])} answers differ, "
        f"{len(differ['citations'])} citation lists differ, "
        f"{len(differ['scores'])} with other scores (not only ties in another order)"
    )
    sys.exit(1 if differ["answer"] or differ["citations"] else 0)


if __name__ == "__main__":
    main()
