"""``python -m postd_publisher``: the API, the dispatcher and the workers (by role)."""

from __future__ import annotations

import os

from postd_common.bootstrap import run_service
from postd_common.service import run
from postd_publisher.app import build, service_spec
from postd_publisher.config import load_settings


def main() -> None:
    settings = load_settings(os.environ)
    run(
        "publisher",
        lambda stop: run_service(
            settings.common, service_spec(settings), lambda rt: build(rt, settings), stop
        ),
    )


if __name__ == "__main__":
    main()
