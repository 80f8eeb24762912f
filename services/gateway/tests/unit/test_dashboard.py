"""The dashboard's files as the gateway serves them: content types, caching, the
Content-Security-Policy, and the rules the sources keep (no inline script or style,
no innerHTML, every import and route resolvable)."""

from __future__ import annotations

import gzip
import re
from typing import Any

from aiohttp import web

from postd_gateway.dashboard import (
    CONTENT_SECURITY_POLICY,
    IMMUTABLE,
    PAGES,
    REVALIDATE,
    STATIC,
    Dashboard,
    mount,
)

JS_FILES = sorted(STATIC.rglob("*.js"))


def app_with_dashboard(base: str = "/") -> tuple[web.Application, Dashboard]:
    app = web.Application()
    return app, mount(app, base)


async def test_every_page_answers_the_shell_with_a_strict_policy(aiohttp_client: Any) -> None:
    app, dashboard = app_with_dashboard()
    client = await aiohttp_client(app)
    for page in PAGES:
        path = "/" + page.replace("{post_id}", "0b6f0d7e-1")
        response = await client.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.headers["Cache-Control"] == REVALIDATE
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        body = await response.text()
        assert f'<script type="module" src="{dashboard.prefix}/js/main.js">' in body
    policy = dict(p.split(" ", 1) for p in CONTENT_SECURITY_POLICY.split("; "))
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"


async def test_the_shell_revalidates_with_its_etag(aiohttp_client: Any) -> None:
    app, _ = app_with_dashboard()
    client = await aiohttp_client(app)
    first = await client.get("/")
    again = await client.get("/", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    assert await again.read() == b""


async def test_assets_have_their_types_and_are_immutable_in_their_version(
    aiohttp_client: Any,
) -> None:
    app, dashboard = app_with_dashboard()
    client = await aiohttp_client(app)
    for name, content_type in (
        ("js/main.js", "text/javascript; charset=utf-8"),
        ("css/app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ):
        response = await client.get(f"{dashboard.prefix}/{name}", auto_decompress=False)
        assert response.status == 200, name
        assert response.headers["Content-Type"] == content_type
        assert response.headers["Cache-Control"] == IMMUTABLE
        assert response.headers["Vary"] == "Accept-Encoding"
        body = await response.read()
        if response.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        assert body == (STATIC / name).read_bytes()


async def test_assets_are_compressed_for_browsers_that_accept_it(aiohttp_client: Any) -> None:
    app, dashboard = app_with_dashboard()
    client = await aiohttp_client(app)
    packed = await client.get(
        f"{dashboard.prefix}/css/app.css",
        headers={"Accept-Encoding": "gzip"},
        auto_decompress=False,
    )
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await packed.read()) == (STATIC / "css/app.css").read_bytes()
    plain = await client.get(
        f"{dashboard.prefix}/css/app.css", headers={"Accept-Encoding": "identity"}
    )
    assert "Content-Encoding" not in plain.headers


async def test_another_version_is_served_but_not_kept(aiohttp_client: Any) -> None:
    app, _ = app_with_dashboard()
    client = await aiohttp_client(app)
    stale = await client.get("/assets/0123456789abcdef/js/main.js")
    assert stale.status == 200
    assert stale.headers["Cache-Control"] == REVALIDATE
    missing = await client.get("/assets/0123456789abcdef/js/nothing.js")
    assert missing.status == 404
    outside = await client.get("/assets/0123456789abcdef/../__init__.py")
    assert outside.status == 404


async def test_a_base_path_moves_the_pages_not_the_assets(aiohttp_client: Any) -> None:
    app, dashboard = app_with_dashboard("/app")
    client = await aiohttp_client(app)
    for path in ("/app", "/app/", "/app/posts/new", "/app/health"):
        response = await client.get(path)
        assert response.status == 200, path
        assert '<meta name="postd-base" content="/app/">' in await response.text()
    assert (await client.get("/health")).status == 404
    assert (await client.get(f"{dashboard.prefix}/js/main.js")).status == 200


def test_the_fingerprint_follows_the_contents(tmp_path: Any) -> None:
    (tmp_path / "js").mkdir()
    (tmp_path / "index.html").write_text('<script src="%ASSETS%/js/a.js"></script>')
    (tmp_path / "js" / "a.js").write_text("export const a = 1;\n")
    before = Dashboard("/", root=tmp_path)
    (tmp_path / "js" / "a.js").write_text("export const a = 2;\n")
    after = Dashboard("/", root=tmp_path)
    assert before.version != after.version
    assert after.prefix in after.shell.body.decode()


# --------------------------------------------------------------------------- the sources


def test_no_inline_script_style_or_handlers_in_the_shell() -> None:
    shell = (STATIC / "index.html").read_text()
    for script in re.findall(r"<script\b[^>]*>", shell):
        assert "src=" in script, script
    assert not re.search(r"\sstyle=", shell)
    assert not re.search(r"\son[a-z]+=", shell)


def test_scripts_never_write_markup() -> None:
    """Text from the API is only ever set as text: no innerHTML, outerHTML,
    insertAdjacentHTML, document.write or eval in the dashboard's code."""
    forbidden = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(")
    for path in JS_FILES:
        code = re.sub(r"^\s*//.*$", "", path.read_text(), flags=re.MULTILINE)
        assert not forbidden.search(code), path


def test_every_import_resolves() -> None:
    pattern = re.compile(r"""(?:from\s+|import\()\s*["'](\.{1,2}/[^"']+)["']""")
    for path in JS_FILES:
        for target in pattern.findall(path.read_text()):
            assert (path.parent / target).resolve().is_file(), f"{path.name}: {target}"


def test_the_client_routes_are_the_served_pages() -> None:
    main = (STATIC / "js" / "main.js").read_text()
    client = {p.replace(":id", "{post_id}") for p in re.findall(r'\{ path: "([^"]*)"', main)}
    assert client == set(PAGES)
