"""The CORS a new bucket gets for the console's presigned uploads. The S3 client here is a
stand-in that records calls (the real sequence runs on moto's server in
tests/integration/test_console_presigned_sequence.py); it answers PutBucketCors as MinIO's
community edition does, with NotImplemented, which must not stop the store from working."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any, cast

from minio import Minio
from minio.error import S3Error
from structlog.testing import capture_logs
from urllib3 import HTTPResponse

from kubemate.objectstore.s3 import S3ObjectStore, cors_configuration
from kubemate.settings import ObjectStoreConfig

NS = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}


class CorsRefusingClient:
    """Stand-in for MinIO community: buckets work, bucket CORS is NotImplemented."""

    def __init__(self) -> None:
        self.buckets: set[str] = set()
        self.cors_requests: list[dict[str, Any]] = []

    def bucket_exists(self, name: str) -> bool:
        return name in self.buckets

    def make_bucket(self, name: str, location: str | None = None) -> None:
        self.buckets.add(name)

    def _execute(self, method: str, bucket_name: str, **kwargs: Any) -> None:
        self.cors_requests.append({"method": method, "bucket": bucket_name, **kwargs})
        raise S3Error(HTTPResponse(status=501), "NotImplemented", "not implemented", "", "", "")

    def presigned_put_object(self, bucket: str, key: str, expires: object) -> str:
        return f"http://minio:9000/{bucket}/{key}?X-Amz-Signature=s"


def test_the_rule_lets_the_console_origins_put_with_a_content_type_only() -> None:
    root = ET.fromstring(cors_configuration(["https://a.example", "http://127.0.0.1:8000"]))
    (rule,) = root.findall("s3:CORSRule", NS)
    assert [e.text for e in rule.findall("s3:AllowedOrigin", NS)] == [
        "https://a.example",
        "http://127.0.0.1:8000",
    ]
    assert [e.text for e in rule.findall("s3:AllowedMethod", NS)] == ["PUT"]
    assert [e.text for e in rule.findall("s3:AllowedHeader", NS)] == ["content-type"]


def test_a_store_without_bucket_cors_still_creates_the_bucket_and_says_what_to_do() -> None:
    client = CorsRefusingClient()
    config = ObjectStoreConfig(
        provider="s3",
        bucket="kubemate",
        cors_origins=["https://kubemate.example.com/"],  # type: ignore[list-item]
    )
    store = S3ObjectStore(config, client=cast(Minio, client))
    with capture_logs() as logs:
        url = store.presigned_put_url("tenants/acme/uploads/u1", 60)
    assert url.startswith("http://minio:9000/kubemate/tenants/acme/uploads/u1?")
    assert client.buckets == {"kubemate"}
    (request,) = client.cors_requests
    assert request["query_params"] == {"cors": ""} and "Content-MD5" in request["headers"]
    assert b"<AllowedOrigin>https://kubemate.example.com</AllowedOrigin>" in request["body"]
    refused = [e for e in logs if e["event"] == "objectstore.bucket_cors_refused"]
    assert refused and refused[0]["code"] == "NotImplemented"
    # Once: the bucket is ready, and an existing bucket's CORS is never rewritten.
    store.presigned_put_url("tenants/acme/uploads/u2", 60)
    assert len(client.cors_requests) == 1


def test_no_origins_no_cors_request() -> None:
    client = CorsRefusingClient()
    store = S3ObjectStore(ObjectStoreConfig(provider="s3"), client=cast(Minio, client))
    store.presigned_put_url("tenants/acme/uploads/u1", 60)
    assert client.cors_requests == []
