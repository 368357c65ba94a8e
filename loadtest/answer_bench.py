"""Answer quality, refusals and latency of ``POST /v1/chat`` on a running embedded stack.

Starts ``kubemate up`` on a fresh data directory (or uses ``--url`` of a running stack), uploads
each dataset's paragraphs into two tenants (a paragraph's whole article goes to one of them, by
a hash of its title), then asks every sampled question twice, streamed (``stream: true``):

* of the tenant holding its gold paragraph: an *answerable* question;
* of the other tenant, which lacks it: an *unanswerable* variant, which should be refused.

It reports, per dataset and answer mode (``answer_mode`` in the request):

* exact match and F1 against the best gold answer (SQuAD's normalisation; Chinese by character,
  as CMRC 2018's evaluation does), with the citation labels and quotation marks taken out;
* contains gold: the normalised answer contains a normalised gold answer;
* gold cited: a citation the answer refers to is the gold paragraph (for COVID-QA, whose
  "paragraphs" are whole articles, the gold article);
* answers of at most two sentences, and answers with a repeated word 8-gram (Chinese:
  character 16-gram) or echoed prompt scaffolding ("Question:", "Answer:", "问题：", ...);
* cannot-answer precision and recall on the unanswerable variants (a refusal of an answerable
  question is a false one), and the share of answerable questions refused;
* p50/p95 latency and time to the first ``token`` event (TTFT).

Every answer carries its ``evidence`` (the best sentence's coverage of the question), refused or
not, so the calibration table (refusals at each threshold, answerable vs unanswerable) comes from
the same run; the thresholds are ``KUBEMATE_ANSWERS__MIN_EVIDENCE_{EN,ZH}``.

Datasets are read in place, never copied into the repository:

* ``--cmrc`` (default ``../shared/datasets/cmrc2018_trial``): CMRC 2018 trial, the ``zh``
  collection (multilingual-e5-small);
* ``--squad-json``: any SQuAD-format file, the ``default`` collection (all-MiniLM-L6-v2). The
  English set used for BENCHMARKS.md is COVID-QA (deepset-ai/COVID-QA,
  ``data/question-answering/200423_covidQA.json`` at commit fb2eb5e, Apache-2.0: 98 articles,
  1,380 questions with gold spans), since SQuAD v1.1/v2.0 dev and XQuAD are reserved and no
  SQuAD train file could be obtained here.

``--split report`` asks only the questions of the half of each dataset by article
(:func:`split_of`) that no setting was chosen on: settings are tuned on the other half with
``loadtest/answer_tune.py``, which replays retrieved chunks offline.

Run (2 busy cores: ~4 min to ingest both, ~1 s per quoted answer)::

    .venv/bin/python loadtest/answer_bench.py --squad-json /path/200423_covidQA.json \\
        --questions 200 --generative-questions 20 --out answers.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import string
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scifact_bench import (
    embedded_stack,
    machine,
    rate_limits_out_of_the_way,
    request,
)

from kubemate.auth import Role, issue_token
from kubemate.settings import KubemateSettings

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CMRC = REPO.parent / "shared" / "datasets" / "cmrc2018_trial"
TERMINAL = {"COMPLETED", "FAILED"}
STAGES = ("embed", "search", "evidence", "prompt", "generate", "grounding")
BATCH = 20  # files per upload request: the ingest service's default limit
SCAFFOLDING = ("Question:", "Answer:", "Known information:", "问题：", "回答：", "已知信息：")
_LABEL = re.compile(r"\[\d{1,3}\]")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")


# ---- datasets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    answers: list[str]
    paragraph: str  # the gold paragraph's id


@dataclass(frozen=True)
class Dataset:
    name: str
    language: str
    collection: str
    paragraphs: dict[str, str]  # id -> text to upload
    titles: dict[str, str]  # id -> article title (which tenant holds it)
    questions: list[Question]


def load_cmrc(path: Path) -> Dataset:
    paragraphs: dict[str, str] = {}
    titles: dict[str, str] = {}
    with (path / "corpus.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            paragraphs[row["_id"]] = f"{row['title']}\n\n{row['text']}"
            titles[row["_id"]] = row["title"]
    questions = []
    with (path / "answers.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            # Two trial questions are blank (an API would answer 422): not questions.
            if not row.get("is_impossible") and row["question"].strip():
                questions.append(
                    Question(row["_id"], row["question"], row["answers"], row["paragraph"])
                )
    return Dataset("CMRC 2018 trial", "zh", "zh", paragraphs, titles, questions)


def load_squad(path: Path) -> Dataset:
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs: dict[str, str] = {}
    titles: dict[str, str] = {}
    questions = []
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article["paragraphs"]):
            pid = f"a{a}p{p}"
            paragraphs[pid] = paragraph["context"]
            titles[pid] = str(article.get("title") or a)
            for qa in paragraph["qas"]:
                answers = [x["text"] for x in qa.get("answers", []) if x["text"].strip()]
                if answers and not qa.get("is_impossible") and qa["question"].strip():
                    questions.append(Question(str(qa["id"]), qa["question"], answers, pid))
    return Dataset(path.name, "en", "default", paragraphs, titles, questions)


def tenant_of(dataset: Dataset, paragraph: str, prefix: str) -> str:
    side = hashlib.sha256(dataset.titles[paragraph].encode()).digest()[0] % 2
    return f"{prefix}-{dataset.collection}-{'ab'[side]}"


def split_of(dataset: Dataset, paragraph: str) -> str:
    """The half of the dataset a paragraph's questions belong to, by its article: "tune"
    (settings are chosen on it, ``answer_tune.py``) or "report" (the figures reported)."""
    title = dataset.titles[paragraph]
    return ("tune", "report")[hashlib.sha256(f"split:{title}".encode()).digest()[0] % 2]


def other_tenant(tenant: str) -> str:
    return tenant[:-1] + ("b" if tenant.endswith("a") else "a")


# ---- metrics (SQuAD's normalisation; Chinese by character, as CMRC 2018's script) ---------------

_PUNCTUATION = set(string.punctuation) | set("，。！？；：、“”‘’（）《》【】「」『』…—·～")


def strip_answer(answer: str) -> str:
    """The answer without citation labels and the quotation marks of quoted answers."""
    return _LABEL.sub(" ", answer).replace("“", " ").replace("”", " ").replace('"', " ")


def tokens(text: str, language: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if c in _PUNCTUATION else c for c in text)
    if language == "en":
        text = re.sub(r"\b(a|an|the)\b", " ", text)
        return text.split()
    out: list[str] = []
    word = ""
    for c in text:
        if _CJK.match(c) or c.isspace():
            if word:
                out.append(word)
                word = ""
            if not c.isspace():
                out.append(c)
        else:
            word += c
    if word:
        out.append(word)
    return out


def f1(prediction: list[str], gold: list[str]) -> float:
    common = sum((Counter(prediction) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(prediction), common / len(gold)
    return 2 * precision * recall / (precision + recall)


LIST_ITEM = re.compile(r"(?:^|\s)\d+[.、．]\s*")


def repeats(answer: str, language: str) -> bool:
    """A repeated word 8-gram (Chinese: character 16-gram), which a repeated sentence or a
    generation loop makes and a name that two quoted sentences share does not, or the
    prompt's scaffolding echoed."""
    if any(s in answer for s in SCAFFOLDING):
        return True
    text = strip_answer(answer)
    units = tokens(text, language)
    n = 8 if language == "en" else 16
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    if len(grams) != len(set(grams)):
        return True
    # A numbered list looping through the same item: its numbers change, so no n-gram repeats.
    items = [i.strip() for i in LIST_ITEM.split(text)[1:] if len(i.strip()) >= 2]
    return len(items) != len(set(items))


def sentence_count(answer: str, language: str) -> int:
    text = strip_answer(answer)
    ends = r"[。！？!?]+" if language == "zh" else r"[.!?]+(?=\s|$)"
    return max(1, len([p for p in re.split(ends, text) if p.strip()]))


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# ---- asking -------------------------------------------------------------------------------------


@dataclass
class Answer:
    question: Question
    answerable: bool
    mode: str
    body: dict[str, Any]
    latency_ms: float
    ttft_ms: float


def ask(
    http: httpx.Client,
    url: str,
    token: str,
    dataset: Dataset,
    question: Question,
    mode: str,
    answerable: bool,
    top_k: int,
) -> Answer:
    """One streamed question: the time to the first token event, and the done event's body."""
    body = {
        "question": question.text,
        "collection": dataset.collection,
        "answer_mode": mode,
        "stream": True,
        "cache": False,
        "top_k": top_k,
    }
    headers = {"Authorization": f"Bearer {token}"}
    for attempt in range(6):
        started = time.perf_counter()
        first: float | None = None
        done: dict[str, Any] | None = None
        event = ""
        with http.stream("POST", url + "/v1/chat", json=body, headers=headers) as response:
            if response.status_code in (429, 502, 503, 504):
                time.sleep(float(response.headers.get("retry-after", 2**attempt)))
                continue
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    if event == "token" and first is None:
                        first = time.perf_counter()
                    elif event == "done":
                        done = json.loads(line[5:])
                    elif event == "error":
                        raise SystemExit(f"error event: {line}")
        took = time.perf_counter() - started
        if done is None:
            raise SystemExit(f"no done event for {question.id}")
        ttft = (first or time.perf_counter()) - started
        return Answer(question, answerable, mode, done, took * 1000, ttft * 1000)
    raise SystemExit(f"{question.id}: the stack stayed unavailable")


# ---- ingest -------------------------------------------------------------------------------------


def ingest(http: httpx.Client, url: str, dataset: Dataset, prefix: str) -> dict[str, str]:
    """Uploads each paragraph as ``<id>.txt`` to its tenant; returns tenant -> token."""
    tokens_of: dict[str, str] = {}
    by_tenant: dict[str, list[str]] = {}
    for pid in dataset.paragraphs:
        by_tenant.setdefault(tenant_of(dataset, pid, prefix), []).append(pid)
    for tenant, pids in sorted(by_tenant.items()):
        token = issue_token(KubemateSettings().auth, tenant, roles=(Role.ADMIN,))
        tokens_of[tenant] = token
        headers = {"Authorization": f"Bearer {token}"}
        if len(listed(http, url, token, dataset.collection)) >= len(pids):
            print(f"  {tenant}: indexed by an earlier run", flush=True)
            continue
        for i in range(0, len(pids), BATCH):
            files = [
                ("files", (f"{pid}.txt", dataset.paragraphs[pid].encode(), "text/plain"))
                for pid in pids[i : i + BATCH]
            ]
            out = request(
                http,
                "POST",
                url + "/v1/documents/batch",
                files=files,
                data={"collection": dataset.collection},
                headers=headers,
            ).json()
            refused = [r for r in out["results"] if r.get("problem")]
            if refused:
                raise SystemExit(f"uploads refused: {refused[:3]}")
        print(f"  {tenant}: {len(pids)} paragraphs uploaded", flush=True)
    for tenant, pids in sorted(by_tenant.items()):
        wait_indexed(http, url, tokens_of[tenant], dataset.collection, len(pids))
    return tokens_of


def listed(http: httpx.Client, url: str, token: str, collection: str) -> list[dict[str, Any]]:
    """The tenant's documents in ``collection`` (the first 1,000)."""
    headers = {"Authorization": f"Bearer {token}"}
    params = {"collection": collection, "limit": 1000}
    documents: list[dict[str, Any]] = request(
        http, "GET", url + "/v1/documents", headers=headers, params=params
    ).json()
    return documents


def wait_indexed(http: httpx.Client, url: str, token: str, collection: str, expected: int) -> None:
    started = time.monotonic()
    while True:
        page = listed(http, url, token, collection)
        statuses = Counter(doc["status"] for doc in page)
        if sum(n for s, n in statuses.items() if s in TERMINAL) >= expected:
            if statuses.get("FAILED"):
                raise SystemExit(f"{statuses['FAILED']} documents failed to index")
            print(f"  indexed {expected} in {time.monotonic() - started:.0f} s", flush=True)
            return
        time.sleep(3.0)


# ---- report -------------------------------------------------------------------------------------


@dataclass
class Figures:
    dataset: str
    mode: str
    rows: dict[str, float] = field(default_factory=dict)


def at_threshold(answers: list[Answer], threshold: float, refusal: str) -> list[Answer]:
    """The answers the stack gives with ``threshold`` at least as strict as the one it ran
    with: an answer whose evidence is below it becomes the refusal (the evidence of an answer
    does not depend on the threshold)."""
    out = []
    for a in answers:
        if not a.body["cannot_answer"] and (a.body["evidence"] or 0.0) < threshold:
            body = {**a.body, "answer": refusal, "cannot_answer": True}
            body["citations"] = [{**c, "cited": False} for c in a.body["citations"]]
            a = Answer(a.question, a.answerable, a.mode, body, a.latency_ms, a.ttft_ms)
        out.append(a)
    return out


def score(dataset: Dataset, answers: list[Answer]) -> dict[str, float]:
    answerable = [a for a in answers if a.answerable]
    unanswerable = [a for a in answers if not a.answerable]
    language = dataset.language
    em = f1s = contains = cited = short = repeated = 0.0
    for a in answerable:
        text = a.body["answer"]
        refused = a.body["cannot_answer"]
        predicted = [] if refused else tokens(strip_answer(text), language)
        golds = [tokens(g, language) for g in a.question.answers]
        em += max(float(predicted == g) for g in golds)
        f1s += max(f1(predicted, g) for g in golds)
        flat = "".join(predicted) if language == "zh" else " ".join(predicted)
        contains += any(
            ("".join(g) if language == "zh" else " ".join(g)) in flat for g in golds if g
        )
        gold_source = f"{a.question.paragraph}.txt"
        cited += any(c["cited"] and c["source"] == gold_source for c in a.body["citations"])
    for a in answers:
        short += sentence_count(a.body["answer"], language) <= 2
        repeated += repeats(a.body["answer"], language)
    refused_u = sum(a.body["cannot_answer"] for a in unanswerable)
    refused_a = sum(a.body["cannot_answer"] for a in answerable)
    n = max(1, len(answerable))
    return {
        "questions": len(answerable),
        "exact_match": em / n,
        "f1": f1s / n,
        "contains_gold": contains / n,
        "gold_cited": cited / n,
        "at_most_two_sentences": short / max(1, len(answers)),
        "repeated_ngram_answers": repeated,
        "cannot_answer_precision": refused_u / max(1, refused_u + refused_a),
        "cannot_answer_recall": refused_u / max(1, len(unanswerable)),
        "answerable_refused": refused_a / n,
        "p50_ms": percentile([a.latency_ms for a in answers], 0.5),
        "p95_ms": percentile([a.latency_ms for a in answers], 0.95),
        "ttft_p50_ms": percentile([a.ttft_ms for a in answers], 0.5),
        "ttft_p95_ms": percentile([a.ttft_ms for a in answers], 0.95),
        # The raw cost of the parts: each stage's median over the answers that ran it.
        **{
            f"{stage}_p50_ms": percentile(
                [a.body["timings"][stage] for a in answers if stage in a.body["timings"]], 0.5
            )
            for stage in STAGES
        },
    }


def calibration(answers: list[Answer]) -> list[tuple[float, float, float]]:
    """(threshold, answerable refused, unanswerable refused) on the evidence of each answer."""
    ok = [a.body["evidence"] or 0.0 for a in answers if a.answerable]
    bad = [a.body["evidence"] or 0.0 for a in answers if not a.answerable]
    rows = []
    for step in range(0, 21):
        t = step / 20
        refused_ok = sum(e < t for e in ok) / max(1, len(ok))
        rows.append((t, refused_ok, sum(e < t for e in bad) / max(1, len(bad))))
    return rows


def table(results: list[Figures]) -> str:
    lines = [
        "| dataset | mode | questions | EM | F1 | contains gold | gold cited | ≤2 sentences "
        "| repeated | refused: precision | recall | answerable refused | p50 ms | p95 ms "
        "| TTFT p50 ms | TTFT p95 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f in results:
        r = f.rows
        lines.append(
            f"| {f.dataset} | {f.mode} | {r['questions']:.0f} | {r['exact_match']:.3f} "
            f"| {r['f1']:.3f} | {r['contains_gold']:.3f} | {r['gold_cited']:.3f} "
            f"| {r['at_most_two_sentences']:.3f} | {r['repeated_ngram_answers']:.0f} "
            f"| {r['cannot_answer_precision']:.3f} | {r['cannot_answer_recall']:.3f} "
            f"| {r['answerable_refused']:.3f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} "
            f"| {r['ttft_p50_ms']:.0f} | {r['ttft_p95_ms']:.0f} |"
        )
    lines += ["", "| dataset | mode | " + " | ".join(f"{s} p50 ms" for s in STAGES) + " |"]
    lines.append("|---|---|" + "---|" * len(STAGES))
    for f in results:
        cells = " | ".join(f"{f.rows[s + '_p50_ms']:.0f}" for s in STAGES)
        lines.append(f"| {f.dataset} | {f.mode} | {cells} |")
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cmrc", type=Path, default=DEFAULT_CMRC, help="'' to skip")
    parser.add_argument("--squad-json", type=Path, help="an English SQuAD-format file")
    parser.add_argument("--url", help="use this running stack instead of starting one")
    parser.add_argument("--data-dir", type=Path, help="the stack's data dir (default: a new tmp)")
    parser.add_argument("--skip-ingest", action="store_true", help="the datasets are indexed")
    parser.add_argument("--tenant-prefix", default="answer-bench")
    parser.add_argument("--questions", type=int, default=200, help="sampled per dataset")
    parser.add_argument(
        "--generative-questions", type=int, default=20, help="of those, also generated (0: none)"
    )
    parser.add_argument(
        "--split",
        choices=("tune", "report", "all"),
        default="all",
        help="only the questions of this half of each dataset (by article; see answer_tune.py)",
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1, help="concurrent questions")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, help="write the figures and every answer as JSON")
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="LANG=T",
        help="also report the figures at this evidence threshold (e.g. zh=0.2), at least as "
        "strict as the stack's: calibrate with a permissive stack, then read the figures at "
        "the chosen threshold from the same answers",
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, url: str) -> None:
    datasets = []
    if str(args.cmrc) not in ("", ".") and (args.cmrc / "answers.jsonl").exists():
        datasets.append(load_cmrc(args.cmrc))
    if args.squad_json:
        datasets.append(load_squad(args.squad_json))
    if not datasets:
        raise SystemExit("no dataset: pass --cmrc or --squad-json")
    results: list[Figures] = []
    dump: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "figures": {},
        "calibration": {},
        "answers": [],
    }
    started_all = time.perf_counter()
    with httpx.Client(timeout=900.0, trust_env=False) as http:
        prepared = []  # every dataset is indexed first; then each mode runs on each
        for dataset in datasets:
            print(
                f"{dataset.name}: {len(dataset.paragraphs)} paragraphs, "
                f"{len(dataset.questions)} questions",
                flush=True,
            )
            if args.skip_ingest:
                tenants = {
                    tenant_of(dataset, pid, args.tenant_prefix) for pid in dataset.paragraphs
                }
                tokens_of = {
                    t: issue_token(KubemateSettings().auth, t, roles=(Role.ADMIN,)) for t in tenants
                }
            else:
                started = time.perf_counter()
                tokens_of = ingest(http, url, dataset, args.tenant_prefix)
                dump["figures"][f"{dataset.name} ingest_s"] = time.perf_counter() - started
            sample = [
                q
                for q in dataset.questions
                if args.split == "all" or split_of(dataset, q.paragraph) == args.split
            ]
            random.Random(args.seed).shuffle(sample)
            prepared.append((dataset, tokens_of, sample[: args.questions]))
        modes = [("extractive", args.questions), ("generative", args.generative_questions)]
        for mode, count in modes:
            for dataset, tokens_of, sample in prepared:
                if count > 0:
                    run_mode(
                        args, http, url, dataset, tokens_of, sample[:count], mode, results, dump
                    )
    print(f"done in {time.perf_counter() - started_all:.0f} s")


def run_mode(
    args: argparse.Namespace,
    http: httpx.Client,
    url: str,
    dataset: Dataset,
    tokens_of: dict[str, str],
    questions: list[Question],
    mode: str,
    results: list[Figures],
    dump: dict[str, Any],
) -> None:
    """Each question of its own tenant and of the other; the figures printed and dumped."""
    jobs = []
    for q in questions:
        home = tenant_of(dataset, q.paragraph, args.tenant_prefix)
        jobs.append((q, True, tokens_of[home]))
        jobs.append((q, False, tokens_of[other_tenant(home)]))

    def one(job: tuple[Question, bool, str]) -> Answer:
        q, answerable, token = job
        return ask(http, url, token, dataset, q, mode, answerable, args.top_k)

    started = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        answers = list(pool.map(one, jobs))
    took = time.perf_counter() - started
    figures = Figures(dataset.name, mode, score(dataset, answers))
    results.append(figures)
    for lang, value in (t.split("=") for t in args.threshold):
        if lang == dataset.language:
            refusal = next((a.body["answer"] for a in answers if a.body["cannot_answer"]), "")
            strict = at_threshold(answers, float(value), refusal)
            results.append(Figures(dataset.name, f"{mode} @ {value}", score(dataset, strict)))
    dump["figures"][f"{dataset.name} {mode}"] = {**figures.rows, "run_s": took}
    dump["calibration"][f"{dataset.name} {mode}"] = calibration(answers)
    dump["answers"] += [
        {
            "dataset": dataset.name,
            "mode": mode,
            "id": a.question.id,
            "answerable": a.answerable,
            "question": a.question.text,
            "gold": a.question.answers,
            "answer": a.body["answer"],
            "cannot_answer": a.body["cannot_answer"],
            "evidence": a.body["evidence"],
            "unsupported": a.body["unsupported_sentences"],
            "latency_ms": round(a.latency_ms),
            "ttft_ms": round(a.ttft_ms),
            "timings": a.body["timings"],
        }
        for a in answers
    ]
    print(f"  {dataset.name} {mode}: {len(answers)} answers in {took:.0f} s", flush=True)
    print("\n" + table(results) + "\n", flush=True)
    for t, ok, bad in calibration(answers):
        print(
            f"    evidence < {t:.2f}: answerable refused {ok:.3f}, unanswerable refused {bad:.3f}"
        )
    if args.out:
        dump["table"] = table(results)
        args.out.write_text(json.dumps(dump, ensure_ascii=False, indent=1) + "\n")


def stack_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    for name in ("REDIS_URL", "KUBEMATE_URL", "KUBEMATE_TOKEN", "KUBEMATE_DATA_DIR"):
        env.pop(name, None)
    env.update({"PYTHONUNBUFFERED": "1", **rate_limits_out_of_the_way()})
    return env


@contextmanager
def stack(args: argparse.Namespace, prefix: str = "answer-bench-") -> Iterator[str]:
    """The stack to measure: ``--url``'s, else one started on ``--data-dir`` (default: a new
    temporary directory named ``prefix...``) until the block ends. Yields its URL."""
    if args.url:
        yield args.url
        return
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix=prefix))
    print(f"starting kubemate up in {data_dir}", flush=True)
    with embedded_stack(data_dir, stack_env(), args.start_timeout) as url:
        yield url


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with stack(args) as url:
        run(args, url)


if __name__ == "__main__":
    main()
