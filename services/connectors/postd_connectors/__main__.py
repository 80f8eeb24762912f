"""Run the connectors service: ``python -m postd_connectors [serve|migrate]``."""

from __future__ import annotations

import os

from postd_common.bootstrap import main
from postd_connectors.app import SPEC, build
from postd_connectors.config import load_settings

if __name__ == "__main__":
    main(SPEC, lambda: load_settings(os.environ), build)
