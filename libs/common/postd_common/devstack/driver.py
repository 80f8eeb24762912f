"""Drive a whole local stack from outside, as ``make up`` runs it: for benchmarks
and whole-system tests.

:class:`StackProcess` starts ``python -m postd_common.devstack up`` as a child
process on ports no one uses (``POSTD_PORT_OFFSET``) with its own state folder, waits
until it is ready, and then knows, through ``<state>/pids.json``, which process is
which: it can SIGKILL one service (the devstack restarts it), restart the embedded
broker empty (SIGUSR1) or PostgreSQL (SIGUSR2), create tenants with the gateway's
own CLI, and read the stack's whole output (every log line of every service).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from postd_common.devinfra import port_open
from postd_common.devstack.config import BASE_PORTS

ROOT = Path(__file__).resolve().parents[4]
SERVICES = ("vault", "connectors", "webhook-router", "publisher", "health", "gateway")


class StackError(Exception):
    """The stack did not start, or did not do what it was asked in time."""


def free_offset(rng: random.Random | None = None) -> int:
    """A ``POSTD_PORT_OFFSET`` under which every port of the stack is free now."""
    pick = rng or random.SystemRandom()
    highest = max(BASE_PORTS.values())
    for _ in range(200):
        offset = pick.randrange(1000, 65_000 - highest, 7)
        if not any(port_open(base + offset) for base in BASE_PORTS.values()):
            return offset
    raise StackError("no free port range for a stack")


@dataclass(frozen=True)
class Tenant:
    """A tenant made for a run, with its API key."""

    tenant_id: str
    slug: str
    api_key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@dataclass
class StackProcess:
    """One ``devstack up`` child process and what it started."""

    state: Path
    offset: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0
    _log: IO[bytes] | None = field(default=None, repr=False)

    # -- where things are
    def port(self, name: str) -> int:
        return BASE_PORTS[name] + self.offset

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port('gateway')}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.port('sandbox')}"

    @property
    def log_path(self) -> Path:
        return self.state / "stack.log"

    def log_text(self) -> str:
        """Everything the stack printed so far: every line of every service."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pids(self) -> dict[str, Any]:
        path = self.state / "pids.json"
        if not path.exists():
            return {}
        loaded: dict[str, Any] = json.loads(path.read_text())
        return loaded

    def service_pid(self, name: str) -> int:
        pid = self.pids().get("services", {}).get(name)
        if not isinstance(pid, int):
            raise StackError(f"{name} is not running")
        return pid

    @property
    def database_url(self) -> str:
        return str(self.pids().get("database_url", ""))

    @property
    def kafka_bootstrap(self) -> str:
        return str(self.pids().get("kafka_bootstrap", ""))

    def dev_api_key(self) -> str:
        return (self.state / "dev-api-key").read_text().strip()

    def secret(self, name: str) -> str:
        """A generated development secret (platform app credentials, webhook secrets)."""
        stored: dict[str, str] = json.loads((self.state / "dev-secrets.json").read_text())
        return self.env.get(name) or stored[name]

    # -- life
    @classmethod
    async def start(
        cls,
        state: Path,
        *,
        env: Mapping[str, str] | None = None,
        offset: int | None = None,
        timeout: float = 120.0,
    ) -> StackProcess:
        """Start a stack in ``state`` and wait until it printed that it is ready."""
        state.mkdir(parents=True, exist_ok=True)
        chosen = free_offset() if offset is None else offset
        child_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("POSTD_", "OTEL_"))
            and k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP")
        }
        child_env.update(env or {})
        child_env["POSTD_PORT_OFFSET"] = str(chosen)
        stack = cls(state=state, offset=chosen, env=dict(env or {}))
        began = time.monotonic()
        stack._spawn(child_env)
        assert stack.process is not None
        try:
            while "ready in" not in stack.log_text():
                if stack.process.poll() is not None:
                    raise StackError(f"the stack exited; see {stack.log_path}")
                if time.monotonic() - began > timeout:
                    raise StackError(f"the stack was not ready in {timeout:.0f}s")
                await asyncio.sleep(0.2)
        except BaseException:
            await stack.stop()
            raise
        stack.started_in = time.monotonic() - began
        return stack

    def _spawn(self, env: dict[str, str]) -> None:
        """Start ``devstack up`` (returns at once), its output appended to stack.log."""
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "postd_common.devstack", "up", "--state", str(self.state)],
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def stop(self, timeout: float = 60.0) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- faults
    async def kill_service(self, name: str, *, timeout: float = 60.0) -> float:
        """SIGKILL one service; wait until the devstack has started it again and it
        answers. Returns the seconds from the kill until it answered."""
        old = self.service_pid(name)
        began = time.monotonic()
        os.kill(old, signal.SIGKILL)
        while True:
            pid = self.pids().get("services", {}).get(name)
            if isinstance(pid, int) and pid != old and await self._answers(name):
                return time.monotonic() - began
            if self.process is None or self.process.poll() is not None:
                raise StackError("the stack exited")
            if time.monotonic() - began > timeout:
                raise StackError(f"{name} did not come back within {timeout:.0f}s")
            await asyncio.sleep(0.1)

    async def _answers(self, name: str) -> bool:
        if name in ("gateway", "sandbox"):
            return port_open(self.port(name))
        from postd_common.grpcutil import check_health

        return await check_health(f"127.0.0.1:{self.port(name)}", timeout=1.0)

    async def restart_infra(self, what: str, *, timeout: float = 90.0) -> float:
        """Restart the embedded ``broker`` (empty) or ``postgres``; returns the seconds
        until the devstack reported it back."""
        if self.process is None:
            raise StackError("not started")
        before = int(self.pids().get("infra_restarts", {}).get(what, 0))
        began = time.monotonic()
        os.kill(self.process.pid, signal.SIGUSR1 if what == "broker" else signal.SIGUSR2)
        while int(self.pids().get("infra_restarts", {}).get(what, 0)) <= before:
            if self.process.poll() is not None:
                raise StackError(f"the stack exited while restarting {what}")
            if time.monotonic() - began > timeout:
                raise StackError(f"{what} was not back within {timeout:.0f}s")
            await asyncio.sleep(0.05)
        return time.monotonic() - began

    # -- tenants
    async def create_tenants(
        self, slug_prefix: str, count: int, role: str = "owner"
    ) -> list[Tenant]:
        """Tenants with an API key each, made by the gateway's own CLI."""
        out = self.state / f"tenants-{slug_prefix}.json"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("POSTD_")},
            "POSTD_ENV": "development",
            "POSTD_LOG_LEVEL": "warning",
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP": self.kafka_bootstrap,
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "postd_gateway",
            "create-tenants",
            "--slug-prefix",
            slug_prefix,
            "--count",
            str(count),
            "--role",
            role,
            "--out",
            str(out),
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        said, _ = await proc.communicate()
        if proc.returncode != 0:
            raise StackError(f"create-tenants failed: {said.decode(errors='replace')[-500:]}")
        rows = json.loads(out.read_text())
        out.unlink()
        return [Tenant(r["tenant_id"], r["slug"], r["api_key"]) for r in rows]
