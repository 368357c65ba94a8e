"""Security headers on every response (a pure ASGI middleware: streamed responses pass through).

An API answers JSON to programs: nothing may sniff it into HTML, frame it, cache it in a shared
cache, or leak its URLs in a Referer. A route that sets one of these headers itself keeps its own.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kubemate.http.config import HttpConfig

API_CSP = "default-src 'none'; frame-ancestors 'none'"
# The interactive docs load Swagger UI / ReDoc from a CDN: they get no CSP rather than a broken
# page, and the API paths keep the strict one.
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


def security_headers(config: HttpConfig) -> list[tuple[str, str]]:
    headers = [
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "no-referrer"),
        ("Cross-Origin-Resource-Policy", "same-origin"),
        ("Cache-Control", "no-store"),
    ]
    if config.hsts_max_age_s > 0:
        value = f"max-age={config.hsts_max_age_s}"
        if config.hsts_include_subdomains:
            value += "; includeSubDomains"
        headers.append(("Strict-Transport-Security", value))
    return headers


class SecurityHeaders:
    def __init__(self, app: ASGIApp, config: HttpConfig) -> None:
        self.app = app
        self.headers = security_headers(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        strict_csp = scope.get("path") not in DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    headers.setdefault(name, value)
                if strict_csp:
                    headers.setdefault("Content-Security-Policy", API_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)
