"""Hostile requests through the gateway to the real services: oversized and lying bodies, wrong
media types, broken JSON and UTF-8, traversal and control characters in file names and query
parameters. Each gets a clear problem+json (never a 500), memory stays bounded (a body over the
limit is refused before it is read whole), and nothing is stored half-way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from kubemate.auth import Role
from tests.fixtures.inference import OllamaStandIn
from tests.fixtures.services import MACHINE_REDIS
from tests.integration.test_isolation_stack import Stack, running_stack

pytestmark = pytest.mark.integration

MAX_UPLOAD = 256 * 1024


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory,
    milvus_lite_uri: str,
    ollama_standin_server: OllamaStandIn,
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("hostile")
    with running_stack(
        tmp,
        milvus_lite_uri,
        ollama_standin_server.base_url,
        ingest={"max_upload_bytes": MAX_UPLOAD},
    ) as stack:
        yield stack


@pytest.fixture
def tenant(hostile: Stack) -> str:
    return hostile.new_tenant("target")


def problem(response: object, status: int, slug: str | None = None) -> None:
    r = response
    assert r.status_code == status, (r.status_code, r.text[:500])  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json", r.headers  # type: ignore[attr-defined]
    if slug:
        assert r.json()["type"].endswith("/" + slug), r.json()  # type: ignore[attr-defined]


def stored_nothing(stack: Stack, tenant: str) -> None:
    """No document row, no object, no stream entry for the tenant."""
    docs = stack.client.get("/v1/documents", headers=stack.auth(tenant)).json()
    assert docs == []
    objects = stack.tmp / "objects"
    assert not any(tenant in str(p) for p in objects.rglob("*")) if objects.exists() else True
    stream = stack.values["redis"]["ingest_stream"]
    entries = redis.Redis.from_url(MACHINE_REDIS).xrange(stream)
    assert not any(tenant.encode() in str(fields).encode() for _, fields in entries)


# ---- sizes ------------------------------------------------------------------------------------


def test_a_declared_huge_json_body_is_refused_before_it_is_read(
    hostile: Stack, tenant: str
) -> None:
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"question": "'
        for _ in range(4096):  # 4 GiB if anyone read it all
            sent += 1
            yield b"x" * (1024 * 1024)

    r = hostile.client.post(
        "/v1/query",
        content=body(),
        headers=hostile.auth(tenant)
        | {"content-type": "application/json", "content-length": str(4 * 1024**3)},
    )
    problem(r, 413, "payload-too-large")
    assert sent <= 2  # the test client pulls one chunk ahead at most


def test_a_streamed_json_body_is_cut_at_the_limit(hostile: Stack, tenant: str) -> None:
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"question": "'
        for _ in range(64):
            sent += 1
            yield b"x" * (64 * 1024)
        yield b'"}'

    r = hostile.client.post(
        "/v1/query",
        content=body(),  # chunked: no length to check up front
        headers=hostile.auth(tenant) | {"content-type": "application/json"},
    )
    problem(r, 413, "payload-too-large")


def test_a_json_route_does_not_take_a_big_body_under_another_label(
    hostile: Stack, tenant: str
) -> None:
    """The JSON limit follows the route, not the Content-Type the client chose."""
    for content_type in ("application/octet-stream", "application/x-www-form-urlencoded"):
        r = hostile.client.post(
            "/v1/query",
            content=b"a=" + b"x" * (3 * 1024 * 1024),
            headers=hostile.auth(tenant) | {"content-type": content_type},
        )
        problem(r, 413, "payload-too-large")


def test_an_upload_over_the_limit_is_413_and_stores_nothing(hostile: Stack, tenant: str) -> None:
    r = hostile.client.post(
        "/v1/documents",
        files={"file": ("big.txt", b"word " * (MAX_UPLOAD // 2))},
        headers=hostile.auth(tenant, Role.EDITOR),
    )
    problem(r, 413, "payload-too-large")
    stored_nothing(hostile, tenant)


def test_an_upload_that_lies_about_its_length_is_refused(hostile: Stack, tenant: str) -> None:
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(8):
            yield b"y" * (64 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = hostile.client.post(
        "/v1/documents",
        content=body(),
        headers=hostile.auth(tenant, Role.EDITOR)
        | {"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code in (400, 413), r.text
    assert r.headers["content-type"] == "application/problem+json"
    stored_nothing(hostile, tenant)


# ---- media types and encodings ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, content_type, body",
    [
        ("/v1/query", "text/xml", b"<question>x</question>"),
        ("/v1/query", "application/x-yaml", b"question: x"),
        ("/v1/documents", "text/plain", b"just text, no form"),
        ("/v1/documents", "application/json", b'{"file": "x"}'),
        ("/v1/api-keys", "text/plain", b"name=x"),
    ],
)
def test_wrong_media_types_are_415(
    hostile: Stack, tenant: str, path: str, content_type: str, body: bytes
) -> None:
    r = hostile.client.post(
        path, content=body, headers=hostile.auth(tenant) | {"content-type": content_type}
    )
    problem(r, 415, "unsupported-media-type")
    stored_nothing(hostile, tenant)


@pytest.mark.parametrize(
    "body, status",
    [
        (b'{"question": ', 422),
        (b'{"question": "q", }', 422),
        (b"\xff\xfe{\x00", 422),  # a UTF-16 byte order mark, then garbage
        (b'{"question": "caf\xe9"}', 400),  # Latin-1, not UTF-8
        (b'{"question": "\\ud800"}', 422),  # valid JSON, but no Unicode string
        (b"[" * 100_000 + b"]" * 100_000, 400),  # nesting deeper than any parser's stack
        (b'{"question": ' + b"[" * 500 + b"]" * 500 + b"}", 422),
        (b'{"question": "q", "top_k": 1e400}', 422),
        (b'{"question": "q", "top_k": 99999999999999999999999}', 422),
        (b'{"question": "q", "tenant_id": "victim"}', 422),  # the tenant comes from the token
    ],
)
def test_broken_json_is_a_problem(hostile: Stack, tenant: str, body: bytes, status: int) -> None:
    r = hostile.client.post(
        "/v1/query",
        content=body,
        headers=hostile.auth(tenant) | {"content-type": "application/json"},
    )
    if status == 200:
        assert r.status_code == 200, r.text
        assert r.json()["hits"] == []
    else:
        problem(r, status)


@pytest.mark.parametrize(
    "query",
    [
        "limit=-1",
        "limit=0",
        "limit=99999999999999999999999999",
        "limit=1e3",
        "offset=-5",
        "collection=" + "c" * 500,
        "collection=..%2F..%2Fetc",
        "collection=%00",
        "state=NOT_A_STATE",
    ],
)
def test_hostile_query_parameters(hostile: Stack, tenant: str, query: str) -> None:
    for path in ("/v1/documents", "/v1/tasks"):
        r = hostile.client.get(f"{path}?{query}", headers=hostile.auth(tenant))
        assert r.status_code in (200, 404, 422), (path, query, r.status_code, r.text)
        if r.status_code == 200:
            assert r.json() == []
        else:
            assert r.headers["content-type"] == "application/problem+json"


# ---- file names ---------------------------------------------------------------------------------


def raw_upload(stack: Stack, tenant: str, filename: bytes, data: bytes) -> object:
    """A multipart body written by hand, so the file name carries exactly these bytes."""
    boundary = b"kubemate-hostile"
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename + b'"\r\nContent-Type: text/plain\r\n\r\n' + data + b"\r\n--" + boundary
        + b"--\r\n"
    )  # fmt: skip
    return stack.client.post(
        "/v1/documents",
        content=body,
        headers=stack.auth(tenant, Role.EDITOR)
        | {"content-type": "multipart/form-data; boundary=kubemate-hostile"},
    )


@pytest.mark.parametrize(
    "filename",
    [
        b"../../../../etc/passwd",
        b"..\\..\\windows\\win.ini",
        b"/absolute/path/report.txt",
        b"nul\x00byte.txt",
        b"..%2F..%2Fencoded.txt",
        b"caf\xc3\xa9 r\xc3\xa9sum\xc3\xa9.txt",
        b"\xff\xfe invalid utf-8.txt",
        b"tab\tand\x7fdel.txt",
        b"a" * 300 + b".txt",
    ],
)
def test_file_names_cannot_escape_or_break_anything(
    hostile: Stack, tenant: str, filename: bytes
) -> None:
    data = f"Quarterly figures for {filename!r}.".encode()
    r = raw_upload(hostile, tenant, filename, data)
    assert r.status_code in (202, 400, 422), (r.status_code, r.text)  # type: ignore[attr-defined]
    if r.status_code != 202:  # type: ignore[attr-defined]
        assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
        stored_nothing(hostile, tenant)
        return
    doc = hostile.client.get(
        f"/v1/documents/{r.json()['document_id']}",  # type: ignore[attr-defined]
        headers=hostile.auth(tenant),
    ).json()
    name = doc["filename"]
    assert "/" not in name and "\\" not in name and "\x00" not in name and 0 < len(name) <= 255
    objects = hostile.tmp / "objects"
    for path in objects.rglob("*"):
        assert path.resolve().is_relative_to(objects.resolve())
        assert ".." not in path.relative_to(objects).parts
    assert not (Path("/etc") / "passwd.kubemate").exists()


def test_a_client_cannot_pick_the_tenant_in_a_form_field(hostile: Stack, tenant: str) -> None:
    victim = hostile.new_tenant("victim")
    r = hostile.client.post(
        "/v1/documents",
        files={"file": ("a.txt", b"planted text")},
        data={"tenant_id": victim, "tenant": victim},
        headers=hostile.auth(tenant, Role.EDITOR),
    )
    assert r.status_code in (202, 422), r.text
    assert hostile.client.get("/v1/documents", headers=hostile.auth(victim)).json() == []


def test_many_tiny_parts_are_bounded(hostile: Stack, tenant: str) -> None:
    fields = {f"f{i}": "x" for i in range(2000)}
    r = hostile.client.post(
        "/v1/documents",
        files={"file": ("a.txt", b"text")},
        data=fields,
        headers=hostile.auth(tenant, Role.EDITOR),
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/problem+json"
    stored_nothing(hostile, tenant)


def test_server_never_echoes_internal_errors(hostile: Stack, tenant: str) -> None:
    """A request that reaches no service (upstream path refused) still answers cleanly."""
    for path in ("/v1/documents/%2e%2e/%2e%2e/metrics", "/v1/%00", "/v1/documents/a%2Fb"):
        r = hostile.client.get(path, headers=hostile.auth(tenant))
        problem(r, 404)
        assert "Traceback" not in r.text
