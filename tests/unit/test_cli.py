"""The `kubemate` CLI against a mock gateway (httpx.MockTransport): no network, no stack."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from kubemate.auth import Role, verify_token
from kubemate.settings import KubemateSettings
from kubemate_cli.app import app
from kubemate_cli.client import PollingWatcher
from kubemate_cli.common import CliState
from kubemate_cli.ingest import expand_paths

PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBEMATE_URL", "KUBEMATE_TOKEN", "KUBEMATE_DATA_DIR", "KUBEMATE_MODE"):
        monkeypatch.delenv(name, raising=False)
    # Wide enough that rich never wraps what the assertions look for.
    monkeypatch.setenv("COLUMNS", "250")


class FakeGateway:
    """Just enough of the gateway's API. Files named ``fail*`` fail in the worker, ``*.exe``
    are refused at upload; every task takes a few polls."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.polls: dict[str, int] = defaultdict(int)
        self.files: dict[str, str] = {}
        self.chat_response: httpx.Response | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "POST" and path == "/v1/documents":
            return self.upload(request)
        if request.method == "GET" and path.startswith("/v1/tasks/"):
            return self.task(path.rsplit("/", 1)[1])
        if request.method == "POST" and path == "/v1/chat":
            return self.chat_response or self.chat(json.loads(request.content))
        return httpx.Response(404, json={"title": "Not found", "status": 404, "detail": path})

    def upload(self, request: httpx.Request) -> httpx.Response:
        body = request.read().decode("latin-1")
        filename = re.search(r'filename="([^"]+)"', body)
        assert filename, body
        name = filename.group(1)
        assert 'name="collection"' in body
        if name.endswith(".exe"):
            return httpx.Response(
                415,
                headers={"content-type": PROBLEM},
                json={
                    "type": "https://kubemate.dev/problems/unsupported-media-type",
                    "title": "Unsupported media type",
                    "status": 415,
                    "detail": "application/x-dosexec is not a document type",
                },
            )
        n = len(self.files) + 1
        self.files[f"t{n}"] = name
        return httpx.Response(
            202,
            json={
                "document_id": f"d{n}",
                "task_id": f"t{n}",
                "state": "PENDING",
                "duplicate": False,
            },
        )

    def task(self, task_id: str) -> httpx.Response:
        if task_id not in self.files:
            return httpx.Response(
                404,
                headers={"content-type": PROBLEM},
                json={"title": "Task not found", "status": 404, "detail": task_id},
            )
        self.polls[task_id] += 1
        n = self.polls[task_id]
        body = {
            "task_id": task_id,
            "document_id": "d" + task_id[1:],
            "state": "PARSING",
            "stage": "parse",
            "progress": {"done": 0, "total": 0},
            "error": None,
        }
        if n == 2:
            body |= {"state": "EMBEDDING", "progress": {"done": 1, "total": 3}}
        elif n >= 3:
            if self.files[task_id].startswith("fail"):
                body |= {"state": "FAILED", "error": "PDF is encrypted"}
            else:
                body |= {"state": "COMPLETED", "progress": {"done": 3, "total": 3}}
        return httpx.Response(200, json=body)

    def chat(self, body: dict[str, object]) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "answer": "The margin was 3.2 percent [1].",
                "citations": [
                    {
                        "index": 1,
                        "document_id": "d1",
                        "chunk_id": "c1",
                        "source": "acme-2025.pdf",
                        "snippet": "The net interest margin of Acme Bank was 3.2 percent.",
                        "score": 0.8123,
                        "page": 4,
                    }
                ],
                "model": "gemma3-270m",
                "timings": {"retrieve": 12.5, "generate": 840.0},
                "echo": body,
            },
        )


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def state(gateway: FakeGateway) -> CliState:
    return CliState(
        transport=httpx.MockTransport(gateway), watcher=PollingWatcher(0, sleep=lambda s: None)
    )


runner = CliRunner()


def invoke(state: CliState, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), obj=state)


# ---- token -------------------------------------------------------------------------------------


def test_token_verifies_and_carries_the_tenant_and_roles() -> None:
    result = runner.invoke(app, ["token", "--tenant", "acme", "--user", "ann", "--role", "editor"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    identity = verify_token(KubemateSettings().auth, token)
    assert identity.tenant_id == "acme"
    assert identity.user_id == "ann"
    assert identity.roles == frozenset({Role.EDITOR})


def test_token_defaults_to_an_admin_of_the_default_tenant() -> None:
    result = runner.invoke(app, ["token"])
    identity = verify_token(KubemateSettings().auth, result.stdout.strip())
    assert (identity.tenant_id, identity.roles) == ("default", frozenset({Role.ADMIN}))


def test_token_refuses_an_unsafe_tenant() -> None:
    result = runner.invoke(app, ["token", "--tenant", "../etc"])
    assert result.exit_code == 2
    assert "--tenant" in result.output


# ---- ask ---------------------------------------------------------------------------------------


def test_ask_prints_the_answer_and_its_sources(state: CliState, gateway: FakeGateway) -> None:
    result = invoke(state, "ask", "What was the margin?", "--top-k", "3", "-c", "finance")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "The margin was 3.2 percent [1]." in out
    assert "acme-2025.pdf" in out
    assert "0.812" in out
    assert "The net interest margin of Acme Bank" in out
    assert re.search(r"│\s*1\s*│\s*acme-2025.pdf\s*│\s*4\s*│", out), out
    sent = json.loads(gateway.requests[0].content)
    assert sent == {"question": "What was the margin?", "collection": "finance", "top_k": 3}


def test_ask_mints_a_development_token_for_the_default_tenant(
    state: CliState, gateway: FakeGateway
) -> None:
    invoke(state, "ask", "q")
    scheme, token = gateway.requests[0].headers["authorization"].split()
    assert scheme == "Bearer"
    assert verify_token(KubemateSettings().auth, token).tenant_id == "default"


def test_ask_uses_the_given_token_and_the_url_from_stack_json(
    state: CliState, gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "stack.json").write_text(json.dumps({"url": "http://127.0.0.1:8765", "pid": 1}))
    monkeypatch.setenv("KUBEMATE_TOKEN", "tok-123")
    result = invoke(state, "ask", "q", "--data-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    request = gateway.requests[0]
    assert request.headers["authorization"] == "Bearer tok-123"
    assert str(request.url) == "http://127.0.0.1:8765/v1/chat"
    # --url (or KUBEMATE_URL) wins over stack.json.
    invoke(state, "ask", "q", "--data-dir", str(tmp_path), "--url", "http://gw:9/")
    assert str(gateway.requests[1].url) == "http://gw:9/v1/chat"


def test_ask_prints_a_problem_as_a_message_and_exits_non_zero(
    state: CliState, gateway: FakeGateway
) -> None:
    gateway.chat_response = httpx.Response(
        503,
        headers={"content-type": PROBLEM},
        json={
            "type": "https://kubemate.dev/problems/backend-unavailable",
            "title": "A backend service is unavailable",
            "status": 503,
            "detail": "Milvus did not answer",
        },
    )
    result = invoke(state, "ask", "q")
    assert result.exit_code == 1
    assert "A backend service is unavailable (HTTP 503)" in result.stderr
    assert "Milvus did not answer" in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_ask_shortens_an_error_page_that_is_not_a_problem(
    state: CliState, gateway: FakeGateway
) -> None:
    gateway.chat_response = httpx.Response(502, html="<html><body>Bad gateway</body></html>")
    result = invoke(state, "ask", "q")
    assert result.exit_code == 1
    assert "HTTP 502 Bad Gateway" in result.stderr


def test_ask_without_a_gateway_says_how_to_start_one() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    result = invoke(CliState(transport=httpx.MockTransport(refuse)), "ask", "q")
    assert result.exit_code == 1
    assert "Cannot reach Kubemate at http://127.0.0.1:8000" in result.stderr
    assert "kubemate up" in result.stderr


def test_production_mode_needs_an_explicit_token(
    state: CliState, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEMATE_MODE", "production")
    monkeypatch.setenv("KUBEMATE_AUTH__JWT_SECRET", "a-real-secret-" + "x" * 32)
    monkeypatch.setenv("KUBEMATE_AUTH__INTERNAL_SECRET", "another-real-secret-" + "y" * 32)
    result = invoke(state, "ask", "q")
    assert result.exit_code == 1
    assert "KUBEMATE_TOKEN" in result.stderr


# ---- ingest ------------------------------------------------------------------------------------


def test_ingest_follows_each_file_to_completion(
    state: CliState, gateway: FakeGateway, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("alpha")
    (docs / "sub" / "b.md").write_text("beta")
    (docs / ".hidden").write_text("skip me")
    result = invoke(state, "ingest", str(docs), "--collection", "finance")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"a\.txt\s*│\s*d1\s*│\s*COMPLETED\s*│\s*3", out), out
    assert re.search(r"b\.md\s*│\s*d2\s*│\s*COMPLETED\s*│\s*3", out), out
    assert ".hidden" not in out
    assert sorted(gateway.files.values()) == ["a.txt", "b.md"]
    assert all(n == 3 for n in gateway.polls.values())
    uploads = [r for r in gateway.requests if r.url.path == "/v1/documents"]
    assert all(b'name="collection"\r\n\r\nfinance' in r.content for r in uploads)


def test_ingest_reports_failed_tasks_and_refused_files_with_a_non_zero_exit(
    state: CliState, tmp_path: Path
) -> None:
    good, bad, refused = tmp_path / "good.txt", tmp_path / "fail.pdf", tmp_path / "tool.exe"
    for path in (good, bad, refused):
        path.write_text("x")
    result = invoke(state, "ingest", str(good), str(bad), str(refused))
    assert result.exit_code == 1
    out = result.stdout
    assert re.search(r"good\.txt\s*│\s*d1\s*│\s*COMPLETED", out), out
    assert re.search(r"fail\.pdf\s*│\s*d2\s*│\s*FAILED\s*│\s*PDF is encrypted", out), out
    assert re.search(r"tool\.exe\s*│\s*│\s*UPLOAD FAILED\s*│\s*Unsupported media type", out), out
    assert "2 of 3 file(s) failed" in out
    assert "Traceback" not in result.output


def test_ingest_times_out_tasks_that_do_not_finish(gateway: FakeGateway, tmp_path: Path) -> None:
    clock = iter(range(0, 10_000, 100))  # every reading 100 s later than the one before
    state = CliState(
        transport=httpx.MockTransport(gateway),
        watcher=PollingWatcher(0.5, sleep=lambda s: None, clock=lambda: next(clock)),
    )
    doc = tmp_path / "slow.txt"
    doc.write_text("x")
    result = invoke(state, "ingest", str(doc), "--timeout", "150")
    assert result.exit_code == 1
    assert "still" in result.stdout and "after 150 s" in result.stdout


def test_ingest_no_wait_prints_the_tasks_without_following_them(
    state: CliState, gateway: FakeGateway, tmp_path: Path
) -> None:
    doc = tmp_path / "a.txt"
    doc.write_text("x")
    result = invoke(state, "ingest", str(doc), "--no-wait")
    assert result.exit_code == 0, result.output
    assert re.search(r"a\.txt\s*│\s*d1\s*│\s*t1\s*│\s*PENDING", result.stdout), result.stdout
    assert gateway.polls == {}


def test_ingest_of_a_missing_file_is_a_usage_error(state: CliState) -> None:
    result = invoke(state, "ingest", "/no/such/file.txt")
    assert result.exit_code == 2


def test_expand_paths_walks_directories_and_drops_duplicates(tmp_path: Path) -> None:
    (tmp_path / "d" / ".git").mkdir(parents=True)
    (tmp_path / "d" / ".git" / "HEAD").write_text("x")
    (tmp_path / "d" / "x.txt").write_text("x")
    explicit = tmp_path / ".notes.md"
    explicit.write_text("x")
    files = expand_paths([tmp_path / "d", tmp_path / "d" / "x.txt", explicit])
    assert files == [tmp_path / "d" / "x.txt", explicit]


# ---- up ----------------------------------------------------------------------------------------


def test_up_refuses_a_data_dir_whose_stack_is_running(tmp_path: Path) -> None:
    # pid 1 always runs; starting nothing is the point, so no backend is touched.
    (tmp_path / "stack.json").write_text(json.dumps({"url": "http://127.0.0.1:8000", "pid": 1}))
    result = runner.invoke(app, ["up", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "already running" in result.stderr
    assert (tmp_path / "stack.json").exists()
