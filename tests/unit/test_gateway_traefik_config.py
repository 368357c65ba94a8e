"""deploy/traefik/, checked offline: both files parse, every reference resolves, forwardAuth
hands the gateway's signed identity headers on, and every route of every service is reached
through a router that authenticates it.

The real Traefik runs these files in tests/integration/test_gateway_traefik.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from fastapi.routing import iter_route_contexts

from kubemate.auth.internal import IDENTITY_HEADERS
from kubemate_gateway.routing import LOCAL, ROUTES, first_segment
from kubemate_ingest.main import create_app as create_ingest
from kubemate_model_manager.main import create_app as create_model_manager
from kubemate_retrieval.main import create_app as create_retrieval

TRAEFIK = Path(__file__).resolve().parents[2] / "deploy" / "traefik"
SERVICE_OF_APP = {"ingest": "ingest", "retrieval": "retrieval", "model_manager": "model-manager"}
APPS = {
    "ingest": create_ingest,
    "retrieval": create_retrieval,
    "model_manager": create_model_manager,
}


@pytest.fixture(scope="module")
def static() -> dict[str, Any]:
    return yaml.safe_load((TRAEFIK / "traefik.yml").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dynamic() -> dict[str, Any]:
    return yaml.safe_load((TRAEFIK / "dynamic" / "kubemate.yml").read_text())["http"]  # type: ignore[no-any-return]


def test_static_config_is_closed_by_default(static: dict[str, Any]) -> None:
    assert static["providers"]["file"]["directory"] == "/etc/traefik/dynamic"
    assert static["api"] == {"dashboard": False, "insecure": False}
    assert static["entryPoints"]["websecure"]["forwardedHeaders"]["insecure"] is False
    assert static["accessLog"]["fields"]["headers"]["defaultMode"] == "drop"
    for section in ("ping", "metrics"):
        entry = static[section].get("entryPoint") or static[section]["prometheus"]["entryPoint"]
        assert entry in static["entryPoints"]


def test_every_reference_resolves(static: dict[str, Any], dynamic: dict[str, Any]) -> None:
    routers, middlewares, services = dynamic["routers"], dynamic["middlewares"], dynamic["services"]
    assert routers and middlewares and services
    for name, router in routers.items():
        assert router["service"] in services, f"router {name}: unknown service"
        for middleware in router.get("middlewares", []):
            assert middleware in middlewares, f"router {name}: unknown middleware {middleware}"
        for entry_point in router["entryPoints"]:
            assert entry_point in static["entryPoints"], f"router {name}: unknown entry point"
        assert any(m.startswith("ratelimit-") for m in router["middlewares"]), name
        # The console's router sets the same headers but no CSP (the gateway sends the console's).
        headers = "console-headers" if name == "console" else "security-headers"
        assert "strip-identity" in router["middlewares"] and headers in router["middlewares"], name
    for name, service in services.items():
        assert service["loadBalancer"]["servers"], name
        assert service["loadBalancer"]["healthCheck"]["path"] == "/healthz"
    used = {m for r in routers.values() for m in r.get("middlewares", [])}
    # forwardAuth is shipped for other applications behind the same Traefik: Kubemate's own
    # routers go to the gateway, which authenticates and rate-limits each request itself.
    assert "kubemate-auth" not in used
    assert used | {"kubemate-auth"} == set(middlewares), (
        f"unused middlewares: {set(middlewares) - used - {'kubemate-auth'}}"
    )


def test_forward_auth_asks_the_gateway_and_passes_its_signed_headers(
    dynamic: dict[str, Any],
) -> None:
    auth = dynamic["middlewares"]["kubemate-auth"]["forwardAuth"]
    gateway_url = dynamic["services"]["gateway"]["loadBalancer"]["servers"][0]["url"]
    address = urlsplit(auth["address"])
    assert f"{address.scheme}://{address.netloc}" == gateway_url
    assert address.path == "/auth/verify"
    assert auth["trustForwardHeader"] is False
    assert set(auth["authResponseHeaders"]) == set(IDENTITY_HEADERS)
    assert {"Authorization", "X-API-Key"} <= set(auth["authRequestHeaders"])
    stripped = dynamic["middlewares"]["strip-identity"]["headers"]["customRequestHeaders"]
    assert stripped == {h: "" for h in IDENTITY_HEADERS}


def test_rate_and_body_limits(dynamic: dict[str, Any]) -> None:
    middlewares = dynamic["middlewares"]
    for name in ("ratelimit-ip", "ratelimit-upload"):
        limit = middlewares[name]["rateLimit"]
        assert limit["average"] > 0 and limit["burst"] >= limit["average"]
        assert limit["sourceCriterion"]["ipStrategy"]["depth"] == 0
    assert middlewares["json-body-limit"]["buffering"]["maxRequestBodyBytes"] == 1024 * 1024
    headers = middlewares["security-headers"]["headers"]
    assert headers["contentTypeNosniff"] and headers["frameDeny"]
    assert "accessControlAllowOriginList" not in headers  # CORS closed


_LITERAL = re.compile(r"(Path|PathPrefix)\(`([^`]*)`\)")


def router_for(dynamic: dict[str, Any], path: str) -> str:
    """The name of the highest-priority router whose Path/PathPrefix rule matches ``path``."""
    best: tuple[int, str] | None = None
    for name, router in dynamic["routers"].items():
        for kind, literal in _LITERAL.findall(router["rule"]):
            matches = path == literal if kind == "Path" else path.startswith(literal)
            if matches and (best is None or router.get("priority", 0) > best[0]):
                best = (router.get("priority", 0), name)
    assert best is not None, f"no router for {path}"
    return best[1]


@pytest.mark.parametrize("app_name", list(APPS))
def test_every_service_route_is_routed_and_authenticated(
    dynamic: dict[str, Any], app_name: str
) -> None:
    """Each route goes either to its own service behind forwardAuth, or to the gateway (which
    authenticates itself and proxies to the same service)."""
    app = APPS[app_name]()
    paths = [
        r.path
        for r in iter_route_contexts(app.router.routes)
        if r.path and r.path.startswith("/v1/")
    ]
    assert paths
    for path in paths:
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        name = router_for(dynamic, concrete)
        router = dynamic["routers"][name]
        assert ROUTES.get(first_segment(concrete)) == app_name, f"gateway cannot route {path}"
        if router["service"] == "gateway":
            continue
        assert router["service"] == SERVICE_OF_APP[app_name], f"{path} -> {router['service']}"
        assert "kubemate-auth" in router["middlewares"], f"{path} reaches {app_name} unchecked"


def test_chat_goes_through_the_gateway(dynamic: dict[str, Any]) -> None:
    for path in ("/v1/chat", "/v1/chat/completions"):
        assert dynamic["routers"][router_for(dynamic, path)]["service"] == "gateway"
    for segment in LOCAL:
        assert dynamic["routers"][router_for(dynamic, f"/v1/{segment}")]["service"] == "gateway"


def test_the_console_headers_are_the_security_headers_without_a_csp(
    dynamic: dict[str, Any],
) -> None:
    api = dict(dynamic["middlewares"]["security-headers"]["headers"])
    console = dynamic["middlewares"]["console-headers"]["headers"]
    assert "contentSecurityPolicy" not in console
    api.pop("contentSecurityPolicy")
    assert console == api
