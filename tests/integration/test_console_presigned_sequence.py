"""The console's presigned upload, request by request: presign (POST /v1/uploads), the browser's
CORS preflight and PUT to the object store with the console's Origin, then the completion.

The store is moto's S3 server, a stand-in for MinIO (no registry ships MinIO), started here with
moto's own allow-everything CORS turned off, so that the bucket's CORS rules, the ones the
platform writes when it creates the bucket, are what answer the preflight. A browser refuses a
PUT whose preflight lacks ``Access-Control-Allow-Origin`` for its origin; these requests check
that header as the browser would. (tests/e2e/test_console_presigned.py drives the same path from
headless Chromium.)
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from kubemate.auth import Role
from kubemate.objectstore.s3 import S3ObjectStore
from kubemate.settings import ObjectStoreConfig
from kubemate_ingest.main import create_app
from kubemate_ingest.settings import IngestSettings
from tests.fixtures.services import identity_headers

pytestmark = pytest.mark.integration

CONSOLE = "https://kubemate.example.com"


def store_config(url: str, **extra: object) -> ObjectStoreConfig:
    return ObjectStoreConfig(
        provider="s3",
        endpoint=url.removeprefix("http://"),
        access_key="moto-test",
        secret_key=SecretStr("moto-test-secret"),
        bucket=f"console-{uuid.uuid4().hex[:8]}",  # new: the platform creates it
        region="us-east-1",
        **extra,  # type: ignore[arg-type]
    )


@pytest.fixture
def client(backend_env: dict[str, object], cors_strict_s3: str) -> Iterator[TestClient]:
    # public_url is the address browsers reach the store at; here the same server.
    config = store_config(cors_strict_s3, public_url=cors_strict_s3, cors_origins=[CONSOLE])
    settings = IngestSettings(**{**backend_env, "object_store": config})
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        c.headers.update(identity_headers("acme", Role.EDITOR))
        yield c


def preflight(url: str, origin: str) -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=10,
    )


def test_the_console_origin_may_put_to_the_presigned_url_and_complete(
    client: TestClient, cors_strict_s3: str
) -> None:
    data = ("A quarterly report, sent straight to the object store. " * 400).encode()
    r = client.post(
        "/v1/uploads",
        json={
            "filename": "report.txt",
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert r.status_code == 201, r.text
    ticket = r.json()
    assert ticket["url"].startswith(cors_strict_s3 + "/") and ticket["method"] == "PUT"

    allowed = preflight(ticket["url"], CONSOLE)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == CONSOLE
    assert "PUT" in allowed.headers["access-control-allow-methods"]
    assert "content-type" in allowed.headers["access-control-allow-headers"].lower()
    # Another site's page may not use the URL from its visitors' browsers.
    assert preflight(ticket["url"], "https://evil.example").status_code == 403

    put = httpx.put(
        ticket["url"],
        content=data,
        headers={"Origin": CONSOLE, "Content-Type": "text/plain"},
        timeout=30,
    )
    assert put.status_code == 200, put.text
    assert put.headers["access-control-allow-origin"] == CONSOLE

    done = client.post(ticket["complete_url"])
    assert done.status_code == 202, done.text
    document = client.get(f"/v1/documents/{done.json()['document_id']}").json()
    assert (document["filename"], document["size_bytes"]) == ("report.txt", len(data))


def test_a_bucket_created_without_console_origins_answers_no_preflight(cors_strict_s3: str) -> None:
    config = store_config(cors_strict_s3, public_url=cors_strict_s3)
    store = S3ObjectStore(config)
    url = store.presigned_put_url("tenants/acme/uploads/x", 60)
    r = preflight(url, CONSOLE)
    assert "access-control-allow-origin" not in r.headers


def test_presigned_urls_name_the_public_address_not_the_endpoint(cors_strict_s3: str) -> None:
    # Signed locally for the public address (which this process need not reach).
    config = store_config(cors_strict_s3, public_url="https://objects.example.com")
    url = S3ObjectStore(config).presigned_put_url("tenants/acme/uploads/y", 60)
    assert url.startswith(f"https://objects.example.com/{config.bucket}/tenants/acme/uploads/y?")
    assert "X-Amz-Signature=" in url
