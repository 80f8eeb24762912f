"""Vault Get throughput over gRPC, against raw in-process AES-GCM in the same run.

``python -m bench.vault [--secrets N] [--seconds S] [--concurrency 16,32,64] [--kms gcp]``

Starts PostgreSQL (embedded, durable settings, unless ``DATABASE_URL`` is set) and the
vault as its own process (``python -m postd_vault``, pinned to one core when the
machine has more than one), stores ``--secrets`` token bundles as ``connectors``, then
drives ``GetTokenBundle`` from this process at each concurrency for ``--seconds``,
first with the data-key cache off (``POSTD_VAULT_DEK_CACHE_SECONDS=0``: every Get
unwraps through the KMS), then on. Every Get also writes its audit row.

The raw limit is what the Get does cryptographically, in-process with nothing
around it: one data-key unwrap plus one payload decrypt (two AES-256-GCM opens),
measured in the same run. ``overhead`` = raw opens/s / vault Gets/s: how many times
more the whole path (gRPC, identity check, PostgreSQL read + audit insert, protobuf)
costs than the crypto. Numbers are for this machine at this moment; compare ratios.

``--kms gcp`` runs the vault against the Cloud KMS stand-in (a separate process, off
the vault's core) through the real client: every unwrap is then an HTTP round trip,
which is what the data-key cache is for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "services" / "vault" / "tests" / "support" / "gcp_kms_standin.py"
GCP_KEY = "projects/postd-bench/locations/global/keyRings/vault/cryptoKeys/kek"
TARGET_GETS_PER_SECOND = 2_000


@dataclass(frozen=True)
class Sample:
    mode: str
    concurrency: int
    gets_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    vault_cpu: float  # share of one core the vault process used while measured


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raw_open_rate(seconds: float = 1.0) -> float:
    """Two AES-256-GCM opens per Get (data key, then a ~300-byte bundle), per second."""
    kek, data_key = AESGCM(secrets.token_bytes(32)), secrets.token_bytes(32)
    aad = b"postd.vault/1 tenant connection token_bundle v1"
    nonce = secrets.token_bytes(12)
    wrapped = kek.encrypt(nonce, data_key, aad)
    payload = AESGCM(data_key).encrypt(nonce, secrets.token_bytes(300), aad)
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(200):
            key = kek.decrypt(nonce, wrapped, aad)
            AESGCM(key).decrypt(nonce, payload, aad)
        done += 200
    return done / seconds


VAULT_CORE = 0


def other_cores() -> set[int]:
    cores = set(range(os.cpu_count() or 1))
    return cores - {VAULT_CORE} or cores


def pin_tree(pid: int, cores: set[int]) -> None:
    """Pin a process and its current children (PostgreSQL's backends fork from it)."""
    pids = [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                pids.append(int(stat.parent.name))
    for each in pids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(each, cores)


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        yield dsn
        return
    from postd_common.devinfra import EmbeddedPostgres, free_port

    server = EmbeddedPostgres(workdir / "pg", free_port(), log_file=workdir / "postgres.log")
    try:
        dsn = server.start()
        if server.pid is not None:
            pin_tree(server.pid, other_cores())  # off the vault's core
        yield dsn
    finally:
        server.stop()


def identities(workdir: Path) -> Path:
    from postd_common.identity import generate_keypair

    directory = workdir / "identity"
    for name in ("vault", "connectors"):
        generate_keypair(directory, name)
    return directory


@contextlib.contextmanager
def kms_standin() -> Iterator[dict[str, str]]:
    """The Cloud KMS stand-in as its own process; yields the vault's KMS settings."""
    from postd_common.devinfra import free_port, port_open

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(STANDIN), str(port), GCP_KEY],
        cwd=ROOT,
        preexec_fn=lambda: os.sched_setaffinity(0, other_cores()),
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the Cloud KMS stand-in did not start")
            time.sleep(0.1)
        yield {
            "POSTD_VAULT_KMS": "gcp",
            "POSTD_VAULT_GCP_KEY_NAME": GCP_KEY,
            "POSTD_VAULT_GCP_ENDPOINT": f"http://127.0.0.1:{port}",
        }
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def vault_process(
    dsn: str,
    workdir: Path,
    identity_dir: Path,
    cache_seconds: float,
    metrics_port: int,
    kms_env: dict[str, str],
) -> Iterator[tuple[str, int]]:
    from postd_common.devinfra import free_port

    grpc_port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("POSTD_")},
        "DATABASE_URL": dsn,
        "POSTD_ENV": "development",
        "POSTD_LOG_LEVEL": "warning",
        "POSTD_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "POSTD_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
        "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "vault.key"),
        "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
        "POSTD_VAULT_KEYRING_FILE": str(workdir / "vault-keyring.json"),
        "POSTD_VAULT_DEK_CACHE_SECONDS": f"{cache_seconds:g}",
        **kms_env,
    }

    def pin() -> None:  # the vault on one core; this client and PostgreSQL on the others
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {VAULT_CORE})

    process = subprocess.Popen(
        [sys.executable, "-m", "postd_vault"],
        env=env,
        cwd=ROOT,
        preexec_fn=pin,
        stderr=open(workdir / f"vault-{cache_seconds:g}.log", "wb"),  # noqa: SIM115
    )
    target = f"127.0.0.1:{grpc_port}"
    try:
        asyncio.run(_wait_healthy(target, process))
        yield target, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _wait_healthy(target: str, process: subprocess.Popen[bytes]) -> None:
    from postd_common.grpcutil import check_health

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the vault exited with {process.returncode} at start")
        if await check_health(target, timeout=1.0):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the vault did not become healthy within 60 s")


async def _drive(
    target: str,
    pid: int,
    identity_dir: Path,
    tenant: str,
    connections: list[str],
    concurrencies: list[int],
    seconds: float,
    mode: str,
    seed: bool,
) -> list[Sample]:
    from postd.vault.v1 import vault_pb2, vault_pb2_grpc
    from postd_common.grpcutil import open_channel
    from postd_common.identity import IdentitySigner

    signer = IdentitySigner.from_file("connectors", identity_dir / "connectors.key")
    channel = open_channel(target, signer=signer, audience="vault")
    stub = vault_pb2_grpc.VaultServiceStub(channel)
    try:
        if seed:
            limit = asyncio.Semaphore(32)

            async def store(connection: str) -> None:
                bundle = vault_pb2.TokenBundle(
                    access_token="EAA" + secrets.token_urlsafe(120),
                    refresh_token=secrets.token_urlsafe(48),
                    scopes=["pages_manage_posts", "pages_read_engagement"],
                    extra={"page_id": secrets.token_hex(8)},
                )
                async with limit:
                    await stub.StoreTokenBundle(
                        vault_pb2.StoreTokenBundleRequest(
                            tenant_id=tenant, connection_id=connection, bundle=bundle
                        )
                    )

            await asyncio.gather(*(store(c) for c in connections))
        samples = []
        for concurrency in concurrencies:
            samples.append(
                await _measure(
                    stub, vault_pb2, pid, tenant, connections, concurrency, seconds, mode
                )
            )
        return samples
    finally:
        await channel.close()


async def _measure(
    stub: Any,
    vault_pb2: Any,
    pid: int,
    tenant: str,
    connections: list[str],
    concurrency: int,
    seconds: float,
    mode: str,
) -> Sample:
    latencies: list[float] = []
    errors = 0
    counting = False
    stop = asyncio.Event()

    async def worker(offset: int) -> None:
        nonlocal errors
        i = offset
        while not stop.is_set():
            request = vault_pb2.GetTokenBundleRequest(
                tenant_id=tenant, connection_id=connections[i % len(connections)]
            )
            i += concurrency
            started = time.perf_counter()
            try:
                await stub.GetTokenBundle(request, timeout=10)
            except Exception:  # noqa: BLE001 - a benchmark counts failures, it does not stop
                errors += 1
                continue
            if counting:
                latencies.append(time.perf_counter() - started)

    workers = [asyncio.create_task(worker(n)) for n in range(concurrency)]
    await asyncio.sleep(min(1.0, seconds / 3))  # warm-up: connections, caches, JIT-free
    counting = True
    began, cpu_began = time.perf_counter(), cpu_seconds(pid)
    await asyncio.sleep(seconds)
    counting = False
    elapsed, cpu_used = time.perf_counter() - began, cpu_seconds(pid) - cpu_began
    stop.set()
    await asyncio.gather(*workers)
    ordered = sorted(latencies)
    return Sample(
        mode=mode,
        concurrency=concurrency,
        gets_per_second=len(ordered) / elapsed,
        p50_ms=1000 * statistics.median(ordered) if ordered else 0.0,
        p99_ms=1000 * ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0,
        errors=errors,
        vault_cpu=cpu_used / elapsed,
    )


def run(
    *,
    secrets_count: int = 1000,
    seconds: float = 3.0,
    concurrencies: tuple[int, ...] = (16, 32, 64),
    kms: str = "local",
) -> dict[str, Any]:
    """Run the benchmark; returns its figures (and prints nothing)."""
    from postd_common import db
    from postd_common.devinfra import free_port
    from postd_vault.app import MIGRATIONS

    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, other_cores())
    tenant = "bench-" + secrets.token_hex(4)
    connections = [f"conn-{i:05d}" for i in range(secrets_count)]
    with tempfile.TemporaryDirectory(prefix="postd-bench-vault-") as tmp:
        workdir = Path(tmp)
        identity_dir = identities(workdir)
        standin: contextlib.AbstractContextManager[dict[str, str]] = (
            kms_standin() if kms == "gcp" else contextlib.nullcontext({})
        )
        with postgres(workdir) as dsn, standin as kms_env:
            asyncio.run(db.migrate_dsn(dsn, "vault", MIGRATIONS))
            samples: list[Sample] = []
            raw_before = raw_open_rate()
            for mode, cache_seconds, seed in (("cache off", 0.0, True), ("cache on", 60.0, False)):
                with vault_process(
                    dsn, workdir, identity_dir, cache_seconds, free_port(), kms_env
                ) as (target, pid):
                    samples += asyncio.run(
                        _drive(
                            target,
                            pid,
                            identity_dir,
                            tenant,
                            connections,
                            list(concurrencies),
                            seconds,
                            mode,
                            seed,
                        )
                    )
            raw_after = raw_open_rate()
    raw = (raw_before + raw_after) / 2
    cache_off = [s for s in samples if s.mode == "cache off"]
    best_off = max(s.gets_per_second for s in cache_off)
    return {
        "kms": kms,
        "raw_aes_gcm_gets_per_second": raw,
        "target_gets_per_second_cache_off": TARGET_GETS_PER_SECOND,
        "best_gets_per_second_cache_off": best_off,
        # The target is for the default provider; --kms gcp shows what the cache is for.
        "meets_target": best_off >= TARGET_GETS_PER_SECOND if kms == "local" else None,
        "vault_pinned_to_one_core": (os.cpu_count() or 1) > 1,
        "samples": [
            {
                "mode": s.mode,
                "concurrency": s.concurrency,
                "gets_per_second": round(s.gets_per_second, 1),
                "p50_ms": round(s.p50_ms, 2),
                "p99_ms": round(s.p99_ms, 2),
                "errors": s.errors,
                "vault_cpu_percent": round(100 * s.vault_cpu),
                "gets_per_vault_cpu_second": round(s.gets_per_second / s.vault_cpu)
                if s.vault_cpu
                else None,
                "overhead_vs_raw": round(raw / s.gets_per_second, 1) if s.gets_per_second else None,
            }
            for s in samples
        ],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"## vault: GetTokenBundle over gRPC ({result['kms']} KMS)",
        "",
        "| mode | concurrency | Gets/s | p50 ms | p99 ms | errors | vault CPU | "
        "Gets per vault CPU-s | overhead vs raw |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["samples"]:
        lines.append(
            f"| {s['mode']} | {s['concurrency']} | {s['gets_per_second']:,.0f} | "
            f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['errors']} | "
            f"{s['vault_cpu_percent']}% | {s['gets_per_vault_cpu_second']:,} | "
            f"{s['overhead_vs_raw']}x |"
        )
    lines.append("")
    verdict = {True: "met", False: "NOT met", None: "not judged with this KMS"}
    lines.append(
        f"KMS: {result['kms']}; raw in-process AES-GCM (unwrap + decrypt per Get): "
        f"{result['raw_aes_gcm_gets_per_second']:,.0f}/s; target with the cache off and "
        f"the local keyring: {result['target_gets_per_second_cache_off']:,}/s "
        f"({verdict[result['meets_target']]}: best cache-off "
        f"{result['best_gets_per_second_cache_off']:,.0f}/s); vault pinned to one core: "
        f"{result['vault_pinned_to_one_core']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.vault", description=__doc__)
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", default="16,32,64")
    parser.add_argument("--kms", choices=("local", "gcp"), default="local")
    args = parser.parse_args(argv)
    result = run(
        secrets_count=args.secrets,
        seconds=args.seconds,
        concurrencies=tuple(int(c) for c in args.concurrency.split(",")),
        kms=args.kms,
    )
    print(table(result))
    return result


if __name__ == "__main__":
    main()
