"""``python -m postd_common.devstack up|down|status`` — the local stack.

``up`` starts an embedded PostgreSQL and broker (unless DATABASE_URL /
KAFKA_BOOTSTRAP are given), creates topics, starts the sandbox and every service
as supervised child processes with prefixed, readable logs, creates a dev tenant
and API key, prints where the gateway listens, and runs until Ctrl-C or ``down``.

For tools that drive a running stack (``bench/``, chaos tests), it keeps
``<state>/pids.json`` current (its own pid, each child's and the embedded servers',
restart counts, the DSN and bootstrap address) and answers two signals:
``SIGUSR1`` restarts the embedded broker empty on the same port and re-creates the
topics (a broker that lost everything); ``SIGUSR2`` restarts the embedded PostgreSQL
(fast shutdown, then start on the same data folder). Each is counted in pids.json
once done. Neither applies to servers given by DATABASE_URL / KAFKA_BOOTSTRAP.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from postd_common.devinfra import EmbeddedBroker, EmbeddedPostgres, EmbeddedServerError, port_open
from postd_common.devstack.config import StackSettings, load
from postd_common.identity import generate_keypair
from postd_common.kafka import KafkaSettings, broker_reachable, ensure_topics
from postd_common.topics import ALL as ALL_TOPICS

SERVICES = ("vault", "connectors", "webhook-router", "publisher", "health", "gateway")
PLATFORMS = ("META", "LINKEDIN", "TIKTOK", "GOOGLE", "MAILCHIMP", "SHOPIFY", "PINTEREST", "SLACK")
IDENTITIES = (*SERVICES, "operator", "sandbox")
COLOURS = {
    "sandbox": 90,
    "vault": 35,
    "connectors": 36,
    "webhook-router": 33,
    "publisher": 32,
    "health": 34,
    "gateway": 95,
    "stack": 1,
}
ROOT = Path(__file__).resolve().parents[4]


def say(text: str, out: TextIO = sys.stdout) -> None:
    print(f"\033[1mpostd\033[0m  {text}", file=out, flush=True)


def package(service: str) -> str:
    return "postd_" + service.replace("-", "_")


def available(service: str) -> bool:
    """A service takes part once its package has an entry point."""
    base = ROOT / ("sandbox" if service == "sandbox" else f"services/{service}")
    return (base / package(service) / "__main__.py").exists()


# --------------------------------------------------------------------------- dev secrets


def dev_secrets(state: Path, given: Mapping[str, str]) -> dict[str, str]:
    """Development app credentials for each platform (generated once, kept in the
    state folder, 0600), unless the user configured real ones. The sandbox and the
    services get the same values."""
    path = state / "dev-secrets.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted: dict[str, str] = {}
    for platform in PLATFORMS:
        wanted[f"POSTD_{platform}_CLIENT_ID"] = f"dev-{platform.lower()}-app"
        wanted[f"POSTD_{platform}_CLIENT_SECRET"] = secrets.token_urlsafe(24)
    wanted["POSTD_META_VERIFY_TOKEN"] = secrets.token_urlsafe(16)
    wanted["POSTD_SLACK_SIGNING_SECRET"] = secrets.token_hex(16)
    wanted["POSTD_STANDARD_WEBHOOKS_SECRET"] = (
        "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    )
    changed = False
    for key, value in wanted.items():
        if key not in stored:
            stored[key] = value
            changed = True
    if changed:
        path.write_text(json.dumps(stored, indent=2))
        path.chmod(0o600)
    values = {k: given.get(k) or v for k, v in stored.items()}
    # The sandbox signs custom-connector webhooks with the same secret the router checks.
    values["POSTD_SANDBOX_STANDARD_WEBHOOKS_SECRET"] = values["POSTD_STANDARD_WEBHOOKS_SECRET"]
    # Platforms without real credentials talk to the sandbox, with the generated ones.
    values["POSTD_SANDBOX_PLATFORMS"] = given.get("POSTD_SANDBOX_PLATFORMS") or ",".join(
        p.lower()
        for p in PLATFORMS
        if not (given.get(f"POSTD_{p}_CLIENT_ID") and given.get(f"POSTD_{p}_CLIENT_SECRET"))
    )
    return values


# --------------------------------------------------------------------------- processes


def pretty(line: str) -> str:
    """One JSON log line as ``HH:MM:SS level msg key=value``; other lines as they are."""
    if not line.startswith("{"):
        return line
    try:
        entry: dict[str, Any] = json.loads(line)
    except ValueError:
        return line
    ts = str(entry.pop("ts", ""))[11:23]
    level = str(entry.pop("level", "")).upper()
    msg = entry.pop("msg", "")
    for noise in ("service", "logger", "span_id"):
        entry.pop(noise, None)
    tb = entry.pop("traceback", None)
    colour = {"WARNING": 33, "ERROR": 31, "CRITICAL": 31}.get(level, 0)
    fields = " ".join(f"{k}={v}" for k, v in entry.items())
    text = f"{ts} \033[{colour}m{level:<5}\033[0m {msg} \033[2m{fields}\033[0m"
    return text + (f"\n{tb}" if tb else "")


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    stopping: bool = False
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.pumps = [
            asyncio.create_task(self._pump(self.process.stdout)),
            asyncio.create_task(self._pump(self.process.stderr)),
        ]

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        prefix = f"\033[{COLOURS.get(self.name, 0)}m{self.name:>14}\033[0m │ "
        while True:
            raw = await stream.readline()
            if not raw:
                return
            for part in pretty(raw.decode(errors="replace").rstrip()).splitlines():
                print(prefix + part, flush=True)

    async def stop(self, timeout: float = 15.0) -> None:
        self.stopping = True
        proc = self.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for pump in self.pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await pump


class Stack:
    def __init__(self, settings: StackSettings) -> None:
        self.s = settings
        self.postgres: EmbeddedPostgres | None = None
        self.broker: EmbeddedBroker | None = None
        self.children: dict[str, Child] = {}
        self.stop = asyncio.Event()
        self.failure: str | None = None
        self.dsn = ""
        self.bootstrap = ""
        self.infra_restarts = {"broker": 0, "postgres": 0}
        self._infra_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    # -- infrastructure
    def start_infra(self) -> tuple[str, str]:
        state = self.s.state
        dsn = self.s.database_url
        if not dsn:
            say(f"starting embedded PostgreSQL on 127.0.0.1:{self.s.port('postgres')}")
            self.postgres = EmbeddedPostgres(
                state / "postgres", self.s.port("postgres"), log_file=state / "postgres.log"
            )
            dsn = self.postgres.start()
        bootstrap = self.s.kafka_bootstrap
        if not bootstrap:
            say(f"starting embedded Kafka-protocol broker on 127.0.0.1:{self.s.port('broker')}")
            self.broker = EmbeddedBroker(self.s.port("broker"), log_file=state / "broker.log")
            bootstrap = self.broker.start()
        kafka = KafkaSettings(bootstrap=bootstrap, client_id="postd-devstack")
        if not broker_reachable(kafka, timeout=10):
            raise EmbeddedServerError(f"Kafka broker at {bootstrap} does not answer")
        created = ensure_topics(kafka, ALL_TOPICS)
        say(f"topics ready ({len(created)} created)")
        return dsn, bootstrap

    def stop_infra(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def restart_broker(self) -> None:
        """Stop the embedded broker, start it again empty on the same port and
        re-create the topics, as an operator would after losing a broker. Blocks."""
        assert self.broker is not None
        self.broker.stop()
        _wait_port_closed(self.broker.port)
        self.broker.start()
        kafka = KafkaSettings(bootstrap=self.broker.bootstrap, client_id="postd-devstack")
        if not broker_reachable(kafka, timeout=10):
            raise EmbeddedServerError(f"Kafka broker at {self.broker.bootstrap} does not answer")
        ensure_topics(kafka, ALL_TOPICS)

    def restart_postgres(self) -> None:
        """Fast shutdown of the embedded PostgreSQL (clients disconnected, open
        transactions aborted), then start on the same data folder. Blocks."""
        assert self.postgres is not None
        self.postgres.stop()
        _wait_port_closed(self.postgres.port)
        self.postgres.start()

    def on_infra_signal(self, what: str) -> None:
        task = asyncio.get_running_loop().create_task(self._restart_infra(what))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _restart_infra(self, what: str) -> None:
        server = self.broker if what == "broker" else self.postgres
        if server is None:
            say(f"{what} restart asked, but it is not embedded here: ignored")
            return
        async with self._infra_lock:
            say(f"restarting the embedded {what}" + (" empty" if what == "broker" else ""))
            started = time.monotonic()
            try:
                await asyncio.to_thread(
                    self.restart_broker if what == "broker" else self.restart_postgres
                )
            except EmbeddedServerError as exc:
                self.failure = f"{what} did not come back: {exc}"
                self.stop.set()
                return
            self.infra_restarts[what] += 1
            self.write_pids()
            say(f"{what} back in {time.monotonic() - started:.1f}s")

    def write_pids(self) -> None:
        """``<state>/pids.json``: who is who, for tools driving this stack (replaced
        atomically, so a reader never sees half a file)."""
        children = {
            name: child.process.pid
            for name, child in self.children.items()
            if child.process is not None and child.process.returncode is None
        }
        data = {
            "devstack": os.getpid(),
            "postgres": self.postgres.pid if self.postgres is not None else None,
            "broker": self.broker.pid if self.broker is not None else None,
            "services": children,
            "restarts": {name: child.restarts for name, child in self.children.items()},
            "infra_restarts": dict(self.infra_restarts),
            "database_url": self.dsn,
            "kafka_bootstrap": self.bootstrap,
            "ports": {name: self.s.port(name) for name in ("sandbox", *SERVICES)},
        }
        path = self.s.state / "pids.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(data, indent=2))
        temporary.replace(path)

    # -- environment for children
    def child_env(self, dsn: str, bootstrap: str) -> dict[str, str]:
        state = self.s.state
        gateway_url = f"http://127.0.0.1:{self.s.port('gateway')}"
        sandbox_url = f"http://127.0.0.1:{self.s.port('sandbox')}"
        env = {
            **self.s.passthrough,
            "PYTHONUNBUFFERED": "1",
            "POSTD_ENV": self.s.passthrough.get("POSTD_ENV", "development"),
            "POSTD_LOG_LEVEL": self.s.log_level,
            "DATABASE_URL": dsn,
            "KAFKA_BOOTSTRAP": bootstrap,
            "POSTD_KAFKA_SESSION_TIMEOUT_MS": self.s.passthrough.get(
                "POSTD_KAFKA_SESSION_TIMEOUT_MS", "6000"
            ),
            "POSTD_IDENTITY_TRUST_DIR": str(state / "identity"),
            "POSTD_STATE_DIR": str(state),
            "POSTD_GATEWAY_URL": gateway_url,
            "POSTD_PUBLIC_URL": gateway_url,
            "POSTD_GATEWAY_PORT": str(self.s.port("gateway")),
            "POSTD_SANDBOX_URL": sandbox_url,
            "POSTD_SANDBOX_PUBLIC_URL": sandbox_url,
            "POSTD_SANDBOX_PORT": str(self.s.port("sandbox")),
            "POSTD_VAULT_KEYRING_FILE": str(state / "vault-keyring.json"),
            **dev_secrets(state, self.s.passthrough),
        }
        # Google signs Pub/Sub pushes with the keys published here; when the sandbox
        # stands in for Google, that is the sandbox, on whatever port the offset gave it.
        if "google" in env["POSTD_SANDBOX_PLATFORMS"].split(","):
            env.setdefault("POSTD_GOOGLE_JWKS_URL", f"{sandbox_url}/google/oauth2/v3/certs")
        for service in SERVICES:
            if service != "gateway":
                env[f"POSTD_{service.upper().replace('-', '_')}_ADDR"] = (
                    f"127.0.0.1:{self.s.port(service)}"
                )
        return env

    def make_child(self, name: str, base_env: dict[str, str]) -> Child:
        env = dict(base_env)
        if name != "sandbox":
            env["POSTD_IDENTITY_KEY_FILE"] = str(self.s.state / "identity" / f"{name}.key")
            env["POSTD_METRICS_LISTEN"] = f"127.0.0.1:{self.s.port('metrics-' + name)}"
            if name != "gateway":
                env["POSTD_GRPC_LISTEN"] = f"127.0.0.1:{self.s.port(name)}"
        return Child(name, [sys.executable, "-m", package(name)], env)

    async def ready(self, name: str, timeout: float = 45.0) -> bool:
        from postd_common.grpcutil import check_health

        deadline = time.monotonic() + timeout
        child = self.children[name]
        while time.monotonic() < deadline and not self.stop.is_set():
            if child.process is not None and child.process.returncode is not None:
                return False
            if name in ("sandbox", "gateway"):
                if port_open(self.s.port(name)):
                    return True
            elif await check_health(f"127.0.0.1:{self.s.port(name)}", timeout=1.0):
                return True
            await asyncio.sleep(0.2)
        return False

    async def supervise(self, child: Child) -> None:
        """Restart a child that dies, with backoff; give up on a configuration error."""
        while not self.stop.is_set():
            assert child.process is not None
            code = await child.process.wait()
            if child.stopping or self.stop.is_set():
                return
            if code == 2 and time.monotonic() - child.started_at < 10:
                self.failure = f"{child.name} cannot start (see its last line above)"
                self.stop.set()
                return
            child.restarts += 1
            delay = min(30.0, 2.0 ** min(child.restarts, 5))
            say(f"{child.name} exited with code {code}; restarting in {delay:.0f}s")
            await asyncio.sleep(delay)
            if not self.stop.is_set():
                await child.start()
                self.write_pids()

    async def bootstrap_tenant(self, env: dict[str, str]) -> str | None:
        key_file = self.s.state / "dev-api-key"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "postd_gateway",
            "bootstrap-dev-tenant",
            "--key-file",
            str(key_file),
            env=env,
            cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            say(f"could not create the dev tenant: {out.decode(errors='replace').strip()}")
            return None
        return key_file.read_text().strip() if key_file.exists() else None

    async def run(self) -> int:
        state = self.s.state
        state.mkdir(parents=True, exist_ok=True)
        (state / "devstack.pid").write_text(str(os.getpid()))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGUSR1, self.on_infra_signal, "broker")
        loop.add_signal_handler(signal.SIGUSR2, self.on_infra_signal, "postgres")
        for name in IDENTITIES:
            generate_keypair(state / "identity", name)
        started = time.monotonic()
        try:
            dsn, bootstrap = await asyncio.to_thread(self.start_infra)
            self.dsn, self.bootstrap = dsn, bootstrap
            env = self.child_env(dsn, bootstrap)
            names = ["sandbox", *SERVICES]
            missing = [n for n in names if not available(n)]
            if missing:
                say(f"not yet built, skipped: {', '.join(missing)}")
            supervisors = []
            for name in (n for n in names if n not in missing):
                child = self.make_child(name, env)
                self.children[name] = child
                say(f"starting {name}")
                await child.start()
                self.write_pids()
                if not await self.ready(name):
                    self.failure = self.failure or f"{name} did not become ready"
                    break
                supervisors.append(asyncio.create_task(self.supervise(child)))
            if self.failure is None and not self.stop.is_set():
                key = None
                if "gateway" in self.children:
                    key = await self.bootstrap_tenant(env)
                self.banner(time.monotonic() - started, key)
                await self.stop.wait()
        except EmbeddedServerError as exc:
            self.failure = str(exc)
        finally:
            say("stopping")
            for name in reversed(list(self.children)):
                await self.children[name].stop()
            async with self._infra_lock:
                await asyncio.to_thread(self.stop_infra)
            for stale in ("pids.json", "devstack.pid"):
                with contextlib.suppress(FileNotFoundError):
                    (state / stale).unlink()
        if self.failure:
            say(f"\033[31m{self.failure}\033[0m", sys.stderr)
            return 1
        say("stopped")
        return 0

    def banner(self, seconds: float, key: str | None) -> None:
        gateway = f"http://127.0.0.1:{self.s.port('gateway')}"
        lines = [
            f"ready in {seconds:.1f}s",
            f"gateway     {gateway}  (dashboard /, API /v1, docs /docs, health /healthz)",
            f"sandbox     http://127.0.0.1:{self.s.port('sandbox')}",
        ]
        if key:
            lines.append(f"dev API key {key}")
            lines.append(f"            (also in {self.s.state / 'dev-api-key'})")
        lines.append("Ctrl-C or `make down` stops everything.")
        width = max(len(x) for x in lines) + 4
        print("\n" + "═" * width, flush=True)
        for line in lines:
            print(f"  {line}", flush=True)
        print("═" * width + "\n", flush=True)


def _wait_port_closed(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.05)


def down(state: Path) -> int:
    pid_file = state / "devstack.pid"
    if not pid_file.exists():
        say("no stack is running from this folder")
        return 0
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink()
        say("the stack was not running (stale pid file removed)")
        return 0
    for _ in range(300):
        if not pid_file.exists():
            say("stopped")
            return 0
        time.sleep(0.1)
    say("the stack did not stop within 30s")
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m postd_common.devstack")
    parser.add_argument("command", choices=("up", "down"))
    parser.add_argument("--state", type=Path, default=Path(".postd"))
    args = parser.parse_args()
    if args.command == "down":
        sys.exit(down(args.state))
    from postd_common.config import ConfigError

    try:
        settings = load(args.state)
    except ConfigError as exc:
        say(f"invalid configuration: {exc}", sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(Stack(settings).run()))


if __name__ == "__main__":
    main()
