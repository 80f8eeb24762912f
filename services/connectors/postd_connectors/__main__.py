"""Run the connectors service: `python -m postd_connectors`."""

from __future__ import annotations

import os

from postd_common.bootstrap import run_service
from postd_common.config import ConfigError
from postd_common.service import run
from postd_connectors.app import SPEC, build
from postd_connectors.config import load_settings


def main() -> None:
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        raise SystemExit(f"connectors: configuration error: {exc}") from None
    run(
        SPEC.name,
        lambda stop: run_service(settings.common, SPEC, lambda rt: build(rt, settings), stop),
    )


if __name__ == "__main__":
    main()
