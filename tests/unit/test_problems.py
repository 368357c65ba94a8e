"""Every error a service returns is RFC 9457 problem+json; unknown errors leak nothing."""

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from kubemate.errors import BackendUnavailable, DocumentNotFound, RetryableInferenceError
from kubemate.http.problems import PROBLEM_JSON, install_problem_handlers


class Body(BaseModel):
    n: int


def make_client() -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/missing")
    def missing() -> None:
        raise DocumentNotFound("document abc does not exist")

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret connection string postgres://user:pw@host")

    @app.get("/busy")
    def busy() -> None:
        raise RetryableInferenceError("runtime overloaded", retry_after=7)

    @app.get("/down")
    def down() -> None:
        raise BackendUnavailable("redis is down")

    @app.post("/body")
    def body(b: Body) -> dict[str, int]:
        return {"n": b.n}

    return TestClient(app, raise_server_exceptions=False)


def test_known_error_keeps_its_type_and_detail() -> None:
    r = make_client().get("/missing")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM_JSON
    assert r.json() == {
        "type": "https://kubemate.dev/problems/document-not-found",
        "title": "Document not found",
        "status": 404,
        "detail": "document abc does not exist",
        "instance": "/missing",
    }


def test_unknown_error_is_a_plain_500_without_details() -> None:
    r = make_client().get("/boom")
    assert r.status_code == 500
    assert r.json()["type"].endswith("/internal-error")
    assert "postgres" not in r.text and "Traceback" not in r.text


def test_malformed_json_is_a_422_validation_problem() -> None:
    r = make_client().post(
        "/body", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["type"].endswith("/validation-error")


def test_unknown_route_and_method_are_problems() -> None:
    client = make_client()
    assert client.get("/nope").json()["type"].endswith("/not-found")
    r = client.delete("/missing")
    assert r.status_code == 405 and r.headers["content-type"] == PROBLEM_JSON


def test_retry_after_is_passed_on() -> None:
    r = make_client().get("/busy")
    assert r.status_code == 503 and r.headers["retry-after"] == "7"
    assert make_client().get("/down").json()["type"].endswith("/backend-unavailable")
