"""``python -m postd_gateway`` serves HTTP; ``bootstrap-dev-tenant`` creates the dev tenant;
``set-flag`` sets a feature flag's rollout stage and ``create-tenants`` creates tenants
with an API key each (operator actions: onboarding, load tests)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
from pathlib import Path

from aiohttp import web

from postd_common import db
from postd_common.logging import configure_logging, get_logger
from postd_common.metrics import serve_metrics
from postd_common.service import StartupError, run
from postd_common.telemetry import setup_tracing
from postd_gateway.adapters.postgres import FlagStore, TenantStore
from postd_gateway.app import SERVER_LIMITS, SPEC, create_app
from postd_gateway.config import Settings, load_settings
from postd_gateway.domain import (
    FLAG_STAGES,
    ROLES,
    FeatureFlag,
    digest_matches,
    issue_key,
    parse_key,
)

log = get_logger("postd_gateway")


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    configure_logging("gateway", settings.common.log_level)
    setup_tracing("gateway", settings.common.otlp_endpoint)
    try:
        serve_metrics(settings.common.metrics_listen)
    except OSError as exc:
        raise StartupError(
            f"cannot serve metrics on {settings.common.metrics_listen}: {exc}"
        ) from exc
    runner = web.AppRunner(
        create_app(settings),
        access_log=None,
        shutdown_timeout=10,
        max_line_size=SERVER_LIMITS["max_line_size"],
        max_field_size=SERVER_LIMITS["max_field_size"],
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    await site.start()
    # What exists now (modules, descriptors, route table) lives as long as the process:
    # keep it out of the cyclic collector, whose full passes would otherwise walk it
    # and stall requests for milliseconds.
    gc.collect()
    gc.freeze()
    log.info("gateway listening", url=f"http://{settings.http_host}:{settings.http_port}")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def bootstrap_dev_tenant(settings: Settings, key_file: Path) -> None:
    """Create the `dev` tenant and an owner API key, unless the key in ``key_file``
    still works; write the key (0600) and print it."""
    await db.migrate_dsn(settings.common.database_url, "gateway", SPEC.migrations or Path())
    pool = await db.create_pool(settings.common.database_url, max_size=2)
    try:
        store = TenantStore(pool)
        tenant_id = await store.ensure_tenant("dev", "Development tenant")
        if key_file.exists():
            parsed = parse_key(key_file.read_text())
            if parsed is not None:
                record = await store.find_key(parsed[0])
                if (
                    record is not None
                    and record.revoked_at is None
                    and record.tenant_id == tenant_id
                    and digest_matches(record.secret_sha256, parsed[1])
                ):
                    print(f"dev tenant {tenant_id}: existing key kept")
                    return
        issued = issue_key(settings.common.environment)
        await store.add_key(
            tenant_id, issued.key_id, issued.digest, name="dev (make up)", role="owner"
        )
        key_file.parent.mkdir(parents=True, exist_ok=True)
        key_file.write_text(issued.secret + "\n")
        key_file.chmod(0o600)
        print(f"dev tenant {tenant_id}: new owner key written to {key_file}")
    finally:
        await pool.close()


async def set_flag(settings: Settings, flag: FeatureFlag) -> None:
    await db.migrate_dsn(settings.common.database_url, "gateway", SPEC.migrations or Path())
    pool = await db.create_pool(settings.common.database_url, max_size=2)
    try:
        await FlagStore(pool).set_flag(flag)
        where = flag.integration or "every integration"
        print(f"flag {flag.name} ({where}): {flag.stage}, beta {flag.beta_percent} %")
    finally:
        await pool.close()


async def create_tenants(
    settings: Settings, *, slug_prefix: str, count: int, role: str, out: Path
) -> None:
    """``count`` tenants ``<slug_prefix>-<n>`` (kept if they exist), each with a new API
    key of ``role``; the keys are shown once, written to ``out`` (JSON, 0600)."""
    await db.migrate_dsn(settings.common.database_url, "gateway", SPEC.migrations or Path())
    pool = await db.create_pool(settings.common.database_url, max_size=4)
    created: list[dict[str, str]] = []
    try:
        store = TenantStore(pool)
        for n in range(count):
            slug = f"{slug_prefix}-{n}"
            tenant_id = await store.ensure_tenant(slug, slug)
            issued = issue_key(settings.common.environment)
            await store.add_key(
                tenant_id, issued.key_id, issued.digest, name="create-tenants", role=role
            )
            created.append({"tenant_id": tenant_id, "slug": slug, "api_key": issued.secret})
    finally:
        await pool.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch(mode=0o600)
    out.chmod(0o600)
    out.write_text(json.dumps(created, indent=1))
    print(f"{len(created)} tenant(s), each with an API key of role {role}; keys written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m postd_gateway")
    sub = parser.add_subparsers(dest="command")
    boot = sub.add_parser("bootstrap-dev-tenant")
    boot.add_argument("--key-file", type=Path, required=True)
    flag = sub.add_parser("set-flag", help="set a feature flag's rollout stage")
    flag.add_argument("name")
    flag.add_argument("--stage", choices=FLAG_STAGES, required=True)
    flag.add_argument("--integration", default="", help="a platform; empty: all")
    flag.add_argument("--beta-percent", type=int, default=10, choices=range(101), metavar="0-100")
    flag.add_argument("--description", default="")
    tenants = sub.add_parser(
        "create-tenants", help="create tenants with an API key each (keys written to --out)"
    )
    tenants.add_argument("--slug-prefix", required=True)
    tenants.add_argument("--count", type=int, default=1, choices=range(1, 100_001), metavar="N")
    tenants.add_argument("--role", choices=ROLES, default="owner")
    tenants.add_argument("--out", type=Path, required=True, help="JSON file (mode 0600)")
    args = parser.parse_args()
    settings = load_settings(os.environ) if args.command else None

    if args.command == "bootstrap-dev-tenant":
        assert settings is not None
        key_file: Path = args.key_file
        run("gateway", lambda stop: bootstrap_dev_tenant(settings, key_file))
        return
    if args.command == "set-flag":
        assert settings is not None
        wanted = FeatureFlag(
            args.name, args.integration, args.stage, args.beta_percent, args.description
        )
        run("gateway", lambda stop: set_flag(settings, wanted))
        return
    if args.command == "create-tenants":
        assert settings is not None
        run(
            "gateway",
            lambda stop: create_tenants(
                settings,
                slug_prefix=args.slug_prefix,
                count=args.count,
                role=args.role,
                out=args.out,
            ),
        )
        return

    run("gateway", lambda stop: serve(load_settings(os.environ), stop))


if __name__ == "__main__":
    main()
