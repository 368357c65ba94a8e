"""Answer generation with the packaged gemma3-270m on llama.cpp: before and after fitting it.

In this process, no stack: the answer model the embedded default runs (``LlamaCppLLM`` over the
packaged GGUF), ``--questions`` questions over licence-like passages (the integration test's),
each answered twice, streamed:

* **before**: the instruction prompt with "Question: ... Answer:" that every model got until
  now, no stop sequences, no repetition penalty, ``max_tokens`` 256 (the old default);
* **after**: what ``/v1/chat`` now does for a base model: the completion-style prompt, its stop
  sequences, the repetition penalty, the length bound by the question, and the answer filter
  (echoed labels, scaffolding, repeats) over the stream.

Per variant it prints p50/p95 of the answer's latency and time to first token (the first piece
the client would receive), the tokens generated, and how many answers repeat a sentence or an
n-gram (:func:`kubemate_retrieval.repetition.find_repetition`) or echo scaffolding. Beside them,
the raw cost of the parts: prompt evaluation and generation speed of the model alone.

Run (2 idle cores: a few seconds to load, ~2 min for 10 questions, most of it the "before"
answers' 256 tokens each; on a busy machine many times that: 20 min for 6 at load 10-20)::

    .venv/bin/python loadtest/generation_bench.py --questions 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from kubemate.inference import LLM, GenerateOptions, Prompt
from kubemate.inference.llamacpp import LlamaCppLLM
from kubemate.settings import LLMConfig
from kubemate.vectorstore import SearchHit
from kubemate_retrieval.answering import prepare_prompt
from kubemate_retrieval.generation import AnswerFilter, GenerationConfig, answer_options, filtered
from kubemate_retrieval.prompt import PromptConfig, label_contexts
from kubemate_retrieval.repetition import find_repetition

PASSAGES = [
    "Grant of Patent License. Subject to the terms and conditions of this License, each "
    "Contributor hereby grants to You a perpetual, worldwide, non-exclusive, no-charge, "
    "royalty-free, irrevocable patent license to make, use, sell, import, and otherwise "
    "transfer the Work. If You institute patent litigation against any entity alleging that "
    "the Work constitutes patent infringement, then any patent licenses granted to You under "
    "this License for that Work shall terminate as of the date such litigation is filed.",
    "Redistribution. You may reproduce and distribute copies of the Work in any medium, with "
    "or without modifications, provided that You give any other recipients of the Work a copy "
    "of this License, You cause any modified files to carry prominent notices stating that You "
    "changed the files, and You retain all copyright, patent and attribution notices of the "
    "Work.",
    "Trademarks. This License does not grant permission to use the trade names, trademarks, "
    "service marks, or product names of the Licensor, except as required for describing the "
    "origin of the Work.",
    "Disclaimer of Warranty. Unless required by applicable law or agreed to in writing, "
    "Licensor provides the Work on an AS IS BASIS, without warranties or conditions of any "
    "kind, either express or implied.",
]

QUESTIONS = [
    "When does a patent license granted under this license terminate?",
    "What must you give other recipients when you redistribute the Work?",
    "Does this license grant permission to use the Licensor's trademarks?",
    "How does the Licensor provide the Work with respect to warranties?",
    "Who grants the patent license?",
    "Is the patent license royalty-free?",
    "What notices must modified files carry?",
    "Which notices must you retain when redistributing the Work?",
    "Can the Work be distributed with modifications?",
    "What kind of patent license does each Contributor grant?",
]

# The answer prompt every model got before (a copy, for comparison only).
BEFORE_TEMPLATE = (
    "Based on the following known information, answer the user's question concisely and "
    "accurately. Cite the sources you use by their numbers, like [1]. If the sources "
    "contradict each other, point out the contradiction and cite each side. If the "
    "information is insufficient, answer 'Based on the known information, I cannot answer "
    "this question'.\n\n"
    "Known information:\n{context}\n\n"
    "Question: {question}\n"
    "Answer:"
)
_SCAFFOLDING = re.compile(r"\b(Question|Answer|Context|Known information|Q|A)\s*:")


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    repeated: int = 0
    echoed: int = 0
    answers: list[str] = field(default_factory=list)


async def _timed(pieces: AsyncIterator[str]) -> tuple[str, float, float]:
    started = time.perf_counter()
    first = None
    parts = []
    async for piece in pieces:
        if first is None and piece.strip():
            first = time.perf_counter() - started
        parts.append(piece)
    total = time.perf_counter() - started
    return "".join(parts), first if first is not None else total, total


def _record(run: Run, llm: LLM, text: str, ttft: float, total: float) -> None:
    run.latencies.append(total)
    run.ttfts.append(ttft)
    run.tokens.append(llm.count_tokens(text))
    run.repeated += find_repetition(text, GenerationConfig().repetition_rule()) is not None
    run.echoed += bool(_SCAFFOLDING.search(text))
    run.answers.append(text.strip())


async def before(llm: LLM, question: str, run: Run) -> None:
    prompt = BEFORE_TEMPLATE.format(context=label_contexts(PASSAGES), question=question)
    options = GenerateOptions(max_tokens=256, temperature=0.1)
    text, ttft, total = await _timed(llm.stream(prompt, options))
    _record(run, llm, text, ttft, total)


async def after(llm: LLM, question: str, run: Run) -> None:
    config = GenerationConfig()
    hits = [
        SearchHit(f"c{i}", f"d{i}", text, f"s{i}.txt", "", 0, 0, 1.0)
        for i, text in enumerate(PASSAGES)
    ]
    prepared = prepare_prompt(
        llm=llm,
        prompts=PromptConfig(),
        question=question,
        hits=hits,
        history="",
        language="en",
        context_window=2048,
        context_budget=2800,
        options=answer_options(config, LLMConfig(), question),
        kind=await llm.kind(),
    )
    answer = AnswerFilter(config.repetition_rule())
    pieces = filtered(_owned(llm.stream(prepared.prompt, prepared.options)), answer)
    text, ttft, total = await _timed(pieces)
    _record(run, llm, text, ttft, total)


async def _owned(pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    async for piece in pieces:
        yield piece


async def raw_cost(llm: LlamaCppLLM) -> tuple[float, float]:
    """Prompt tokens/s (a one-token completion of the long prompt) and generated tokens/s."""
    prompt: Prompt = BEFORE_TEMPLATE.format(context=label_contexts(PASSAGES), question="Why?")
    n_prompt = llm.count_tokens(str(prompt))
    started = time.perf_counter()
    await llm.generate(prompt, GenerateOptions(max_tokens=1, temperature=0.0))
    prompt_s = time.perf_counter() - started
    started = time.perf_counter()
    completion = await llm.generate("Once upon a time", GenerateOptions(max_tokens=64))
    gen_s = time.perf_counter() - started
    return n_prompt / prompt_s, completion.completion_tokens / gen_s


def _p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--show", action="store_true", help="print every answer")
    args = parser.parse_args()
    questions = QUESTIONS[: args.questions]

    llm = LlamaCppLLM(LLMConfig(context_tokens=2048))
    started = time.perf_counter()
    await llm.load()
    load_s = time.perf_counter() - started
    prompt_tps, gen_tps = await raw_cost(llm)
    runs = {"before": Run(), "after": Run()}
    bench_started = time.perf_counter()
    for n, question in enumerate(questions, 1):
        await before(llm, question, runs["before"])
        await after(llm, question, runs["after"])
        took = runs["before"].latencies[-1], runs["after"].latencies[-1]
        print(f"question {n}/{len(questions)}: {took[0]:.1f} s before, {took[1]:.1f} s after")
    bench_s = time.perf_counter() - bench_started
    await llm.aclose()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; model load {load_s:.1f} s")
    print(f"raw cost: prompt {prompt_tps:.0f} tok/s, generation {gen_tps:.1f} tok/s")
    print(f"{len(questions)} questions x 2 variants in {bench_s:.0f} s\n")
    header = "| variant | latency p50 / p95 s | TTFT p50 / p95 s | tokens mean | repeats | echoes |"
    print(header)
    print("|---|---|---|---|---|---|")
    for name, run in runs.items():
        print(
            f"| {name} | {statistics.median(run.latencies):.2f} / {_p(run.latencies, 0.95):.2f} "
            f"| {statistics.median(run.ttfts):.2f} / {_p(run.ttfts, 0.95):.2f} "
            f"| {statistics.mean(run.tokens):.0f} | {run.repeated}/{len(questions)} "
            f"| {run.echoed}/{len(questions)} |"
        )
    if args.show:
        for i, question in enumerate(questions):
            print(f"\nQ: {question}")
            for name, run in runs.items():
                print(f"  {name}: {run.answers[i]!r}")


if __name__ == "__main__":
    asyncio.run(main())
