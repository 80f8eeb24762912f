"""Fixtures of the dashboard's browser tests: the whole stack as `make up` runs it (on
free ports, with its own state folder, embedded PostgreSQL and broker) and headless
Chromium driven by Playwright.

Chromium is Debian's ``chromium`` package (``make test`` installs it when missing);
without it these tests fail with a message saying so. They are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postd_common.devstack.config import BASE_PORTS

ROOT = Path(__file__).resolve().parents[4]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
READY_TIMEOUT = 180.0


@dataclass(frozen=True)
class Stack:
    gateway: str
    sandbox: str
    api_key: str
    log: Path


# Ports Chromium refuses to open (net::ERR_UNSAFE_PORT) within reach of our offsets.
BROWSER_UNSAFE_PORTS = frozenset({10080})


def _ports_free(offset: int) -> bool:
    if {BASE_PORTS["gateway"] + offset, BASE_PORTS["sandbox"] + offset} & BROWSER_UNSAFE_PORTS:
        return False
    for base in BASE_PORTS.values():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", base + offset))
            except OSError:
                return False
    return True


def free_offset() -> int:
    """A POSTD_PORT_OFFSET whose every port is free (the largest base port is 55432)."""
    start = 1000 + (os.getpid() % 90) * 100
    for step in range(90):
        offset = 1000 + (start - 1000 + step * 100) % 9000
        if _ports_free(offset):
            return offset
    raise RuntimeError("no free port offset for the stack")


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not Path(CHROMIUM).exists():
        found = shutil.which("chromium")
        if found is None:
            pytest.fail(
                "Chromium is missing: the dashboard's browser tests need Debian's chromium "
                "package (`make test` installs it through tools/ensure_test_deps.py when run "
                "as root; otherwise `apt-get install chromium`).",
                pytrace=False,
            )
        return found
    return CHROMIUM


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`python -m postd_common.devstack up` on free ports, torn down with `down`."""
    state = tmp_path_factory.mktemp("devstack")
    log = state / "stack.log"
    offset = free_offset()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("POSTD_", "OTEL_")) and k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP")
    }
    env.update(
        {
            "POSTD_PORT_OFFSET": str(offset),
            "POSTD_LOG_LEVEL": "info",
            # Analytics on a test's pace: a snapshot every 10 s in a post's first hour,
            # the accounts every minute, posts compared as soon as they have figures;
            # media URLs handed to the sandbox as they are (it records them).
            "POSTD_ANALYTICS_POST_SCHEDULE": "3600:10",
            "POSTD_ANALYTICS_ACCOUNT_SECONDS": "60",
            "POSTD_INSIGHTS_MIN_AGE_SECONDS": "0",
            "POSTD_MEDIA_PREFLIGHT": "0",
        }
    )
    command = [sys.executable, "-m", "postd_common.devstack"]
    with log.open("w") as out:
        process = subprocess.Popen(
            [*command, "up", "--state", str(state)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while "ready in" not in log.read_text(errors="replace"):
            if process.poll() is not None:
                pytest.fail(f"the stack exited with {process.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"the stack was not ready within {READY_TIMEOUT:.0f} s:\n{_tail(log)}")
            time.sleep(0.25)
        key = (state / "dev-api-key").read_text().strip()
        yield Stack(
            gateway=f"http://127.0.0.1:{BASE_PORTS['gateway'] + offset}",
            sandbox=f"http://127.0.0.1:{BASE_PORTS['sandbox'] + offset}",
            api_key=key,
            log=log,
        )
    finally:
        subprocess.run(
            [*command, "down", "--state", str(state)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        try:
            process.wait(timeout=45)
        except subprocess.TimeoutExpired:
            # Only the process group this fixture started.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
