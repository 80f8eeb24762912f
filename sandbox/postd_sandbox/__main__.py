"""Run the platform sandbox: `python -m postd_sandbox`."""

from __future__ import annotations

import logging
import os
import sys

from aiohttp import web

from postd_common.logging import configure_logging
from postd_sandbox.app import create_app
from postd_sandbox.config import SettingsError, load_settings


def main() -> int:
    configure_logging("sandbox", os.environ.get("POSTD_LOG_LEVEL", "info").lower())
    try:
        settings = load_settings(os.environ)
    except SettingsError as exc:
        print(f"postd-sandbox: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("postd_sandbox").info(
        "sandbox on %s:%d (public %s, auto_approve=%s)",
        settings.host,
        settings.port,
        settings.public_url,
        settings.auto_approve,
    )
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
