"""Fixtures: the sandbox app driven over real HTTP by aiohttp's test client."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from postd_sandbox.app import create_app
from postd_sandbox.config import SandboxSettings, load_settings


def make_settings(**overrides: Any) -> SandboxSettings:
    base = load_settings({})
    fast: dict[str, Any] = {
        "ig_container_delay_ms": 150,
        "tiktok_processing_delay_ms": 150,
        "timeout_hang_seconds": 5.0,
    }
    fast.update(overrides)
    return dataclasses.replace(base, **fast)


@pytest.fixture
def settings() -> SandboxSettings:
    return make_settings()


@pytest.fixture
async def client(aiohttp_client: Any, settings: SandboxSettings) -> Any:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
def sandbox_client(aiohttp_client: Any) -> Callable[..., Awaitable[Any]]:
    """Build a client on a sandbox with other settings."""

    async def build(**overrides: Any) -> Any:
        return await aiohttp_client(create_app(make_settings(**overrides)))

    return build


class Receiver:
    """A tiny server that records what it receives (webhook target)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            {
                "method": request.method,
                "path": request.path_qs,
                "headers": dict(request.headers),
                "body": await request.read(),
            }
        )
        return web.Response(status=self.status, text="received")


@pytest.fixture
async def receiver(aiohttp_server: Any) -> tuple[Receiver, TestServer]:
    recv = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recv.handle)
    server = await aiohttp_server(app)
    return recv, server
