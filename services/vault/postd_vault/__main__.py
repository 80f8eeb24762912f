"""``python -m postd_vault`` runs the vault; ``python -m postd_vault admin ...`` is the
operator's tool (see :mod:`postd_vault.admin`)."""

from __future__ import annotations

import asyncio
import os
import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "admin":
        from postd_vault.admin import main as admin_main

        sys.exit(admin_main(sys.argv[2:], os.environ))

    from postd_common.bootstrap import run_service
    from postd_common.service import run
    from postd_vault.app import SPEC, build
    from postd_vault.config import load_settings

    async def serve(stop: asyncio.Event) -> None:
        # Inside run(): a ConfigError or an unreachable database is one line, exit 2.
        settings = load_settings(os.environ)
        await run_service(settings.common, SPEC, lambda rt: build(rt, settings), stop)

    run(SPEC.name, serve)


if __name__ == "__main__":
    main()
