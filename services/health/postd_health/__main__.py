"""``python -m postd_health``: read config, then run the service until SIGTERM."""

from __future__ import annotations

import os

from postd_common.bootstrap import run_service
from postd_common.service import run
from postd_health.app import SPEC, build
from postd_health.config import load_settings


def main() -> None:
    settings = load_settings(os.environ)
    run(
        SPEC.name,
        lambda stop: run_service(settings.common, SPEC, lambda rt: build(rt, settings), stop),
    )


if __name__ == "__main__":
    main()
