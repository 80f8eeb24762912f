"""Install what the test suite needs beyond Python packages (Debian's chromium, ffmpeg).

Runs before `make test`. As root (CI, these machines) it installs missing packages
with apt-get; otherwise it says what is missing and the tests that need it report it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

PACKAGES = {"chromium": "chromium", "ffprobe": "ffmpeg"}


def main() -> int:
    missing = sorted({pkg for binary, pkg in PACKAGES.items() if shutil.which(binary) is None})
    if not missing:
        return 0
    if os.geteuid() != 0:
        print(f"missing system packages: {' '.join(missing)} (install them with apt-get)")
        return 0
    print(f"==> installing system packages: {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
