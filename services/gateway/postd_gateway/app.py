"""The gateway's aiohttp application: the only public entry point."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from postd_common import db
from postd_common.bootstrap import ServiceSpec
from postd_gateway import healthz
from postd_gateway.config import Settings

SPEC: Final = ServiceSpec(
    name="gateway", schema="gateway", migrations=Path(__file__).with_name("migrations")
)

SETTINGS: Final = web.AppKey("settings", Settings)
POOL: Final = web.AppKey("pool", asyncpg.Pool)
CHECKS: Final = web.AppKey[dict[str, healthz.Check]]("checks")


async def health(request: web.Request) -> web.Response:
    checks = request.app[CHECKS]
    ok, report = await healthz.run_checks(checks)
    return web.json_response(
        {"status": "ok" if ok else "degraded", "checks": report}, status=200 if ok else 503
    )


async def ready(request: web.Request) -> web.Response:
    ok, report = await healthz.run_checks({"database": healthz.database_check(request.app[POOL])})
    return web.json_response(
        {"status": "ready" if ok else "not ready", "checks": report}, status=200 if ok else 503
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: Settings) -> web.Application:
    """App factory: every resource is opened and closed by one cleanup context."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> AsyncIterator[None]:
        await db.migrate_dsn(
            settings.common.database_url, SPEC.schema or "gateway", SPEC.migrations or Path()
        )
        pool = await db.create_pool(settings.common.database_url, application_name="postd-gateway")
        app[POOL] = pool
        app[CHECKS] = {
            **healthz.backend_checks(settings.backends),
            "database": healthz.database_check(pool),
            "broker": healthz.broker_check(settings.common.kafka),
        }
        yield
        await pool.close()

    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", health)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/metrics", metrics)
    return app
