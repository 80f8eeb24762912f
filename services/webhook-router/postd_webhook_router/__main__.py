"""``python -m postd_webhook_router [serve|worker|migrate]``: read config, then run
until SIGTERM.

``serve`` (the default) answers gRPC and, unless ``POSTD_WEBHOOKS_WORKERS=separate``,
also runs the background work (processing, outbox relay, outbound deliveries, the
Kafka consumers); ``worker`` runs only that background work, beside API processes
started with ``POSTD_WEBHOOKS_WORKERS=separate``; ``migrate`` applies the migrations.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys

from postd_common.bootstrap import migrate_only, run_service
from postd_common.service import run
from postd_webhook_router.app import SPEC, build
from postd_webhook_router.config import load_settings

COMMANDS = ("serve", "worker", "migrate")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    if command not in COMMANDS:
        print(f"usage: python -m postd_webhook_router [{'|'.join(COMMANDS)}]", file=sys.stderr)
        raise SystemExit(2)

    async def go(stop: asyncio.Event) -> None:
        # Loaded inside run(): a bad value is one clear line and exit status 2.
        settings = load_settings(os.environ, worker=command == "worker")
        if command == "migrate":
            await migrate_only(settings.common, SPEC)
            return
        # Everything imported so far lives as long as the process: keep it out of the
        # cyclic collector, whose full passes would otherwise walk it mid-request.
        gc.collect()
        gc.freeze()
        await run_service(settings.common, SPEC, lambda rt: build(rt, settings), stop)

    run(SPEC.name, go)


if __name__ == "__main__":
    main()
