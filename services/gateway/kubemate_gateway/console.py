"""The web console: the built single-page app (``console/dist``) served at ``/``.

Installed as the router's default app, so it answers only what no route matched: ``/v1``,
``/auth/verify``, the probes, ``/metrics`` and the docs keep their own routes, nothing is added
to the OpenAPI document, and no route without a role appears (tests/unit/test_route_roles.py).
Under the API's own prefixes and for anything but GET/HEAD it hands over to the router's
404/405 (problem+json, as before).

- Files under ``assets/`` carry a content hash in their names: cached for a year, immutable.
- A path without a file extension is a client route: it gets ``index.html`` (revalidated on
  every load, so a new build is picked up at once).
- No build (``npm run build`` never ran, or the setting points elsewhere): a page saying how to
  build it, status 404 — never a 500.

Every response carries the console's Content-Security-Policy: the API's ``default-src 'none'``
(kubemate.http.security_headers) would block the app's own script and styles, so the console
allows exactly its own origin, and nothing inline, framed, or sent elsewhere.
"""

from __future__ import annotations

import html
import stat
from pathlib import Path

import anyio
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from kubemate.logs import get_logger

log = get_logger(__name__)


def console_csp(upload_origin: str | None = None) -> str:
    """The console's policy. ``upload_origin``: the object store's public origin, which the
    browser PUTs presigned uploads to (only when the deployment offers them; never ``*``)."""
    connect = "connect-src 'self'" + (f" {upload_origin}" if upload_origin else "")
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self'",
            "font-src 'self'",
            connect,
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


CONSOLE_CSP = console_csp()
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
# Paths the API owns: an unknown path there is the API's 404, never the console's page.
API_PREFIXES = ("/v1", "/auth/", "/docs", "/redoc", "/openapi.json")

_NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Kubemate: console not built</title></head>
<body><h1>The web console is not built</h1>
<p>The gateway serves it from <code>{directory}</code>, which has no <code>index.html</code>.
Build it with <code>make console</code> (or <code>npm ci &amp;&amp; npm run build</code> in
<code>console/</code>), or point <code>KUBEMATE_GATEWAY__CONSOLE_DIR</code> at a build.</p>
<p>The API is at <a href="/docs">/docs</a>.</p></body></html>
"""


def default_console_dir() -> Path:
    """``console/dist`` of the source tree this package runs from (an editable install, as
    ``make up`` makes); an installed image sets ``gateway.console_dir`` instead."""
    return Path(__file__).resolve().parents[3] / "console" / "dist"


class ConsoleApp:
    """ASGI app for what the gateway's routes did not match; ``fallback`` answers the rest."""

    def __init__(self, directory: Path, fallback: ASGIApp, csp: str = CONSOLE_CSP) -> None:
        self.directory = directory
        self.fallback = fallback
        self.csp = csp
        # check_dir=False: a build made after the gateway started is served without a restart.
        self.files = StaticFiles(directory=directory, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or path.startswith(API_PREFIXES)
        ):
            await self.fallback(scope, receive, send)
            return
        response = await self._response(scope, path)
        if response is None:
            await self.fallback(scope, receive, send)
            return
        response.headers["Content-Security-Policy"] = self.csp
        await response(scope, receive, send)

    async def _response(self, scope: Scope, path: str) -> Response | None:
        try:
            response = await self.files.get_response(self.files.get_path(scope), scope)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
        else:
            hashed = path.startswith("/assets/")
            response.headers["Cache-Control"] = IMMUTABLE if hashed else REVALIDATE
            return response
        if "." in path.rsplit("/", 1)[-1]:
            return None  # a missing file, not a page: the API's 404
        return await self._index(scope)

    async def _index(self, scope: Scope) -> Response:
        index = self.directory / "index.html"
        try:
            found = await anyio.to_thread.run_sync(index.stat)
        except OSError:
            found = None
        if found is None or not stat.S_ISREG(found.st_mode):
            log.warning("console.not_built", directory=str(self.directory))
            return HTMLResponse(
                _NOT_BUILT.format(directory=html.escape(str(self.directory))),
                status_code=404,
                headers={"Cache-Control": "no-store"},
            )
        response = self.files.file_response(index, found, scope)
        response.headers["Cache-Control"] = REVALIDATE
        return response


def serve_console(app: FastAPI, directory: Path | None, upload_origin: str | None = None) -> None:
    """Serve the console from ``directory`` (default: :func:`default_console_dir`) for what
    ``app``'s routes do not match, its policy allowing ``upload_origin`` (:func:`console_csp`).
    Starlette calls a router's ``default`` app when no route matched, which is exactly the
    console's share: the routes keep precedence whatever order they are added in, and the
    console adds no route to list or document."""
    console = ConsoleApp(
        directory or default_console_dir(), app.router.default, console_csp(upload_origin)
    )
    # Compressed for the browser (the app's script is ~170 KB, ~65 KB gzipped); a browser
    # fetches each hashed file once, so the cost is paid about once per build and client.
    app.router.default = GZipMiddleware(console, minimum_size=1024, compresslevel=6)
