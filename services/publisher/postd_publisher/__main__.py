"""``python -m postd_publisher [serve|migrate]``: the API, the dispatcher and the
workers (by role), or only the migrations."""

from __future__ import annotations

import asyncio
import os
import sys

from postd_common.bootstrap import migrate_only, run_service
from postd_common.service import run
from postd_publisher.app import build, service_spec
from postd_publisher.config import load_settings

COMMANDS = ("serve", "migrate")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    if command not in COMMANDS:
        print(f"usage: python -m postd_publisher [{'|'.join(COMMANDS)}]", file=sys.stderr)
        raise SystemExit(2)

    async def go(stop: asyncio.Event) -> None:
        # Loaded inside run(): a bad value is one clear line and exit status 2.
        settings = load_settings(os.environ)
        spec = service_spec(settings)
        if command == "migrate":
            await migrate_only(settings.common, spec)
            return
        await run_service(settings.common, spec, lambda rt: build(rt, settings), stop)

    run("publisher", go)


if __name__ == "__main__":
    main()
