"""``python -m postd_vault [serve|migrate]`` runs the vault (or only applies its
migrations); ``python -m postd_vault admin ...`` is the operator's tool (see
:mod:`postd_vault.admin`)."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "admin":
        from postd_vault.admin import main as admin_main

        sys.exit(admin_main(sys.argv[2:], os.environ))

    from postd_common.bootstrap import main as service_main
    from postd_vault.app import SPEC, build
    from postd_vault.config import load_settings

    service_main(SPEC, lambda: load_settings(os.environ), build)


if __name__ == "__main__":
    main()
