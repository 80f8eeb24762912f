"""The web dashboard: a shell page and plain ES modules, served from memory.

There is no build step: the files under ``static/`` are what the browser runs. They
are read once when the app is created. Assets are addressed by a fingerprint of all
their contents (``/assets/<version>/js/main.js``), so a browser may keep them for a
year and still fetches a new deploy at once; modules import each other by relative
paths, so they stay inside one version. Every page path answers the same shell
document (never cached without revalidation), whose script routes on the client.

The dashboard only speaks the public REST API under ``/v1``, with the session cookie.
"""

from __future__ import annotations

import gzip
import hashlib
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

STATIC: Final = Path(__file__).with_name("static")

# Client-side routes, relative to the dashboard's base path; each answers the shell.
PAGES: Final = (
    "",
    "posts",
    "posts/new",
    "posts/{post_id}",
    "analytics",
    "health",
    "dlq",
    "webhook-events",
    "notifications",
    "sign-in",
)

CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".woff2": "font/woff2",
}
# Worth compressing: text over a kilobyte.
_COMPRESSIBLE: Final = (".html", ".js", ".css", ".svg", ".json", ".txt")

# No inline script or style anywhere: every script and stylesheet is a file of ours.
# Styles set through the CSSOM (element.style) are not inline styles and stay allowed.
CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
IMMUTABLE: Final = "public, max-age=31536000, immutable"
REVALIDATE: Final = "no-cache"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None
    content_type: str
    etag: str

    @classmethod
    def of(cls, name: str, body: bytes) -> StaticFile:
        suffix = Path(name).suffix
        gzipped = None
        if suffix in _COMPRESSIBLE and len(body) > 1024:
            packed = gzip.compress(body, compresslevel=9, mtime=0)
            gzipped = packed if len(packed) < len(body) else None
        return cls(
            body=body,
            gzipped=gzipped,
            content_type=CONTENT_TYPES.get(suffix, "application/octet-stream"),
            etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"',
        )

    def respond(self, request: web.Request, cache_control: str) -> web.Response:
        headers = {
            "Cache-Control": cache_control,
            "ETag": self.etag,
            "Vary": "Accept-Encoding",
            "Content-Type": self.content_type,
            **_PAGE_HEADERS,
        }
        if self.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        body = self.body
        if self.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
            body = self.gzipped
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=body, headers=headers)


class Dashboard:
    """The dashboard's files, loaded once, and the two handlers that serve them."""

    def __init__(self, base_path: str, root: Path = STATIC) -> None:
        self.base = base_path.rstrip("/") + "/"
        contents = {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != "index.html"
        }
        fingerprint = hashlib.sha256()
        for name, body in contents.items():
            fingerprint.update(name.encode() + b"\0" + body + b"\0")
        self.version = fingerprint.hexdigest()[:16]
        self.assets = {name: StaticFile.of(name, body) for name, body in contents.items()}
        self.prefix = f"/assets/{self.version}"
        shell = (root / "index.html").read_text("utf-8")
        # Every module up front, so the browser fetches them in parallel instead of
        # discovering them import by import (they are small and cached for a year).
        preload = "\n".join(
            f'<link rel="modulepreload" href="%ASSETS%/{html.escape(name, quote=True)}">'
            for name in contents
            if name.endswith(".js")
        )
        shell = shell.replace("%PRELOAD%", preload)
        shell = shell.replace("%ASSETS%", html.escape(self.prefix, quote=True))
        shell = shell.replace("%BASE%", html.escape(self.base, quote=True))
        self.shell = StaticFile.of("index.html", shell.encode())

    async def page(self, request: web.Request) -> web.Response:
        return self.shell.respond(request, REVALIDATE)

    async def asset(self, request: web.Request) -> web.Response:
        found = self.assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        # An older or newer version's URL (a deploy in progress) still gets today's
        # file, but only for this once.
        fresh = request.match_info["version"] == self.version
        return found.respond(request, IMMUTABLE if fresh else REVALIDATE)

    def page_paths(self) -> list[str]:
        paths = [self.base + page for page in PAGES]
        if self.base != "/":
            paths.append(self.base.rstrip("/"))
        return paths


def mount(app: web.Application, base_path: str) -> Dashboard:
    """Serve the dashboard's pages under ``base_path`` and its assets under /assets/."""
    dashboard = Dashboard(base_path)
    for path in dashboard.page_paths():
        app.router.add_get(path, dashboard.page)
    app.router.add_get("/assets/{version:[0-9a-f]{1,64}}/{name:[A-Za-z0-9_./-]+}", dashboard.asset)
    return dashboard
