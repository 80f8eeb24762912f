"""``make audit``: known vulnerabilities in every locked dependency (pip-audit).

pip-audit asks a vulnerability database over the internet (here OSV, which carries
the PyPA advisory database and GitHub's advisories); there is no offline mode. So this
first checks that the database answers and, when it does not, fails with one line
saying so — a machine without the internet gets a clear "could not audit", never a
silent pass. With the database reachable it audits ``requirements.lock`` exactly as
locked (hashes required, no resolution, no installation) and fails on any finding.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATABASE = ("api.osv.dev", 443)


def reachable(host: str, port: int, timeout: float = 5.0) -> str | None:
    """None when a TCP connection to host:port opens, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def main() -> int:
    problem = reachable(*DATABASE)
    if problem is not None:
        print(
            f"audit: cannot reach the vulnerability database https://{DATABASE[0]} ({problem}); "
            "pip-audit has no offline mode, so nothing was audited. Run `make audit` where "
            "the internet is reachable.",
            file=sys.stderr,
        )
        return 2
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--requirement",
        str(ROOT / "requirements.lock"),
        "--require-hashes",
        "--disable-pip",
        "--vulnerability-service",
        "osv",
        "--progress-spinner",
        "off",
        "--strict",
    ]
    return subprocess.run(command, cwd=ROOT, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
