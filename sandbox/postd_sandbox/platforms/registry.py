"""The set of sandboxed platforms, looked up by name or by request path."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web

from postd_sandbox import consent
from postd_sandbox.platforms.base import Platform
from postd_sandbox.state import SandboxState


class PlatformRegistry:
    def __init__(self, platforms: list[Platform]) -> None:
        self._by_name = {p.name: p for p in platforms}
        # Longest prefix first so nested prefixes can never shadow each other.
        self._by_prefix = sorted(platforms, key=lambda p: len(p.prefix), reverse=True)

    def __iter__(self) -> Iterator[Platform]:
        return iter(self._by_name.values())

    def names(self) -> set[str]:
        return set(self._by_name)

    def get(self, name: str) -> Platform | None:
        return self._by_name.get(name)

    def for_path(self, path: str) -> Platform | None:
        for platform in self._by_prefix:
            if path == platform.prefix or path.startswith(platform.prefix + "/"):
                return platform
        return None

    def seed(self, state: SandboxState) -> None:
        for platform in self:
            state.directories[platform.name] = platform.new_directory(state.ids)

    def routes(self) -> list[web.RouteDef]:
        routes: list[web.RouteDef] = []
        for platform in self:
            routes.extend(platform.routes())
            routes.extend(platform.control_routes())
            path = platform.oauth.authorize_path
            if path:
                routes.append(web.get(path, _bind_get(platform)))
                routes.append(web.post(path, _bind_post(platform)))
        return routes


def _bind_get(platform: Platform) -> consent.Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await consent.authorize_get(platform, request)

    return handler


def _bind_post(platform: Platform) -> consent.Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await consent.authorize_post(platform, request)

    return handler
