"""``python -m postd_health [serve|migrate]``: read config, then run the service (or only
apply its migrations) until SIGTERM. A bad configuration stops it with one line."""

from __future__ import annotations

import os


def main() -> None:
    from postd_common.bootstrap import main as service_main
    from postd_health.app import SPEC, build
    from postd_health.config import load_settings

    service_main(SPEC, lambda: load_settings(os.environ), build)


if __name__ == "__main__":
    main()
