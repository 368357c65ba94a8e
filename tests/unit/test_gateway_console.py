"""The gateway serves the web console at / and leaves every API path as it was.

The console's files here are a small stand-in build in a temporary directory (what matters is
how the gateway serves a build, not what the build contains; the real one is checked by the
console's own tests and tests/e2e/test_console.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from kubemate.auth import Role
from kubemate.http.security_headers import API_CSP
from kubemate.settings import ObjectStoreConfig
from kubemate_gateway.console import CONSOLE_CSP, default_console_dir
from kubemate_gateway.main import create_app
from tests.unit.test_gateway import bearer, gateway_settings

INDEX = (
    b'<!doctype html><html><head><script type="module" src="/assets/index-3f2a1b.js">'
    b'</script></head><body><div id="app"></div></body></html>'
)
SCRIPT = b"console.log('kubemate')"
BIG_SCRIPT = b"export const messages = {};\n" * 2000


@pytest.fixture
def build(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / "assets" / "index-3f2a1b.js").write_bytes(SCRIPT)
    (dist / "assets" / "app-9e8d7c.js").write_bytes(BIG_SCRIPT)
    (dist / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return dist


def console_client(tmp_path: Path, directory: Path) -> TestClient:
    app = create_app(gateway_settings(tmp_path, console_dir=str(directory)))
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path, build: Path) -> Iterator[TestClient]:
    with console_client(tmp_path, build) as c:
        yield c


def test_index_and_client_routes_get_the_app_with_a_strict_policy(client: TestClient) -> None:
    for path in ("/", "/documents", "/documents/0b9c5d", "/chat", "/signin?next=%2Fmodels"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.content == INDEX
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert csp == CONSOLE_CSP
        for directive in (
            "default-src 'self'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "object-src 'none'",
        ):
            assert directive in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        # Revalidated on every load, so a new build is seen at once.
        assert r.headers["cache-control"] == "no-cache"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"


def test_hashed_assets_are_cached_for_good_compressed_and_others_revalidate(
    client: TestClient,
) -> None:
    r = client.get("/assets/index-3f2a1b.js")
    assert r.status_code == 200 and r.content == SCRIPT
    assert "javascript" in r.headers["content-type"]
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.headers["content-security-policy"] == CONSOLE_CSP
    again = client.get("/assets/index-3f2a1b.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304

    big = client.get("/assets/app-9e8d7c.js", headers={"Accept-Encoding": "gzip"})
    assert big.headers["content-encoding"] == "gzip" and big.content == BIG_SCRIPT
    assert big.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert (
        "content-encoding"
        not in client.get("/assets/app-9e8d7c.js", headers={"Accept-Encoding": "identity"}).headers
    )

    r = client.get("/favicon.svg")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    assert client.head("/").status_code == 200


def test_missing_files_and_api_paths_keep_the_api_answers(client: TestClient) -> None:
    # A missing file is not a page: no index.html for it.
    for path in ("/assets/gone-000000.js", "/favicon.ico", "/robots.txt"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json"
    # Unknown paths under the API's prefixes stay the API's problems, with the API's policy.
    r = client.get("/v1/nowhere", headers=bearer("acme"))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["content-security-policy"] == API_CSP
    assert client.get("/v1/tasks/t1").status_code == 401
    assert client.get("/auth/nothing").status_code == 404
    assert client.get("/docs/nothing").status_code == 404
    # Writes are never the console's.
    assert client.post("/documents").status_code == 404
    assert client.delete("/").status_code == 404
    # What the gateway served before still is.
    assert client.get("/healthz").json()["service"] == "gateway"
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/auth/verify", headers=bearer("acme")).status_code == 200


def test_no_traversal_out_of_the_build(client: TestClient, build: Path) -> None:
    (build.parent / "secret.txt").write_text("not for you")
    for path in ("/../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt"):
        r = client.get(path)
        assert b"not for you" not in r.content, path


def test_console_adds_nothing_to_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert all(path.startswith(("/v1/", "/auth/")) for path in paths)


def test_without_a_build_pages_say_how_to_build_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-build"
    with console_client(tmp_path, missing) as client:
        r = client.get("/documents")
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("text/html")
        assert b"not built" in r.content and b"KUBEMATE_GATEWAY__CONSOLE_DIR" in r.content
        assert r.headers["content-security-policy"] == CONSOLE_CSP
        assert client.get("/assets/index-3f2a1b.js").status_code == 404
        assert client.get("/healthz").status_code == 200


def test_a_build_made_after_start_is_served_without_a_restart(tmp_path: Path) -> None:
    later = tmp_path / "later"
    with console_client(tmp_path, later) as client:
        assert client.get("/").status_code == 404
        later.mkdir()
        (later / "index.html").write_bytes(INDEX)
        assert client.get("/").content == INDEX


def test_the_default_directory_is_the_source_trees_build() -> None:
    assert default_console_dir() == Path(__file__).resolve().parents[2] / "console" / "dist"


# ---- presigned uploads from the browser -------------------------------------------------------


def presigned_client(tmp_path: Path, build: Path, **object_store: object) -> TestClient:
    settings = gateway_settings(tmp_path, console_dir=str(build), presigned_min_bytes=1000)
    settings = settings.model_copy(
        update={"object_store": ObjectStoreConfig(provider="s3", **object_store)}  # type: ignore[arg-type]
    )
    return TestClient(create_app(settings), raise_server_exceptions=False)


def test_the_policy_lets_the_console_put_to_the_stores_public_origin_only_when_offered(
    tmp_path: Path, build: Path
) -> None:
    with presigned_client(tmp_path, build, public_url="https://objects.example.com") as c:
        csp = c.get("/documents").headers["content-security-policy"]
        me = c.get("/v1/me", headers=bearer("acme", Role.EDITOR)).json()
    assert "connect-src 'self' https://objects.example.com;" in csp
    assert "*" not in csp
    assert me["uploads"] == {"presigned": True, "presigned_min_bytes": 1000}
    # An S3 store that browsers cannot reach (no public_url): nothing but the console's origin.
    with presigned_client(tmp_path, build, endpoint="minio:9000") as c:
        assert c.get("/").headers["content-security-policy"] == CONSOLE_CSP
        me = c.get("/v1/me", headers=bearer("acme", Role.VIEWER)).json()
    assert me["uploads"]["presigned"] is False


def test_the_filesystem_store_keeps_the_batch_path_and_the_strict_policy(
    client: TestClient,
) -> None:
    assert client.get("/").headers["content-security-policy"] == CONSOLE_CSP
    me = client.get("/v1/me", headers=bearer("acme", Role.EDITOR)).json()
    assert me["uploads"]["presigned"] is False


@pytest.mark.parametrize(
    "url, origin",
    [
        ("https://objects.example.com", "https://objects.example.com"),
        ("https://objects.example.com:443/", "https://objects.example.com"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
    ],
)
def test_the_public_origin_is_scheme_host_and_a_port_other_than_the_default(
    url: str, origin: str
) -> None:
    assert ObjectStoreConfig(provider="s3", public_url=url).browser_origin() == origin  # type: ignore[arg-type]


def test_a_public_url_with_a_path_is_refused() -> None:
    with pytest.raises(ValidationError, match="without a path"):
        ObjectStoreConfig(provider="s3", public_url="https://example.com/s3")  # type: ignore[arg-type]
