"""Signed-webhook ingest throughput, against a bare aiohttp handler in the same run.

``python -m bench.webhooks [--seconds S] [--concurrency C]``

Starts PostgreSQL and the broker (embedded, unless ``DATABASE_URL`` / ``KAFKA_BOOTSTRAP``
are set), the webhook router as its own process (``python -m postd_webhook_router``),
a small ResolveAccount server standing in for connectors, and a front process: an
aiohttp app that mounts the router's passthrough handler on ``/webhooks/...`` — as the
gateway will — and a bare handler on ``/bare`` that answers at once. This process then
posts signed TikTok webhooks (each a new event, signed ``t=…,s=…`` as TikTok does) to
the front for ``--seconds`` with ``--concurrency`` connections, and the same load to
``/bare``. An ingest request is answered after the router verified and stored it;
the events are then normalised, routed and produced to Kafka asynchronously, and the
run waits until every accepted event is emitted to report the end-to-end rate too.

``ratio`` = bare requests/s ÷ webhook requests/s: how many times the whole path
(HTTP front, gRPC hop with service identity, verify, one PostgreSQL transaction)
costs more than HTTP alone on this machine at this moment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FLOOR_PER_SECOND = 2_000
P99_CEILING_MS = 50.0
SECRET = "bench-tiktok-client-secret"  # noqa: S105 - a throwaway bench value


# ------------------------------------------------------------------ the front process


def serve_front(port: int, router: str, identity_dir: str) -> None:
    """Run the front (passthrough + bare) until SIGTERM."""
    from aiohttp import web

    from postd.webhook_router.v1 import webhook_router_pb2_grpc
    from postd_common.grpcutil import open_channel
    from postd_common.identity import IdentitySigner
    from postd_webhook_router.http_passthrough import webhook_passthrough

    async def main() -> None:
        signer = IdentitySigner.from_file("gateway", Path(identity_dir) / "gateway.key")
        channel = open_channel(router, signer=signer, audience="webhook-router")
        handler = webhook_passthrough(webhook_router_pb2_grpc.WebhookRouterServiceStub(channel))

        async def bare(request: web.Request) -> web.Response:
            await request.read()
            return web.Response(status=200)

        app = web.Application()
        app.router.add_route("*", "/webhooks/{platform}", handler)
        app.router.add_post("/bare", bare)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()
        await channel.close()

    asyncio.run(main())


# ------------------------------------------------------------------ infrastructure


@contextlib.contextmanager
def infrastructure(workdir: Path) -> Iterator[tuple[str, str]]:
    from postd_common.devinfra import EmbeddedBroker, EmbeddedPostgres, free_port

    dsn = os.environ.get("DATABASE_URL", "")
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP", "")
    pg = broker = None
    try:
        if not dsn:
            pg = EmbeddedPostgres(workdir / "pg", free_port(), log_file=workdir / "pg.log")
            dsn = pg.start()
        if not bootstrap:
            broker = EmbeddedBroker(free_port(), log_file=workdir / "broker.log")
            bootstrap = broker.start()
        yield dsn, bootstrap
    finally:
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=ROOT,
        stderr=open(log, "wb"),  # noqa: SIM115
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _fake_connectors(identity_dir: Path) -> tuple[Any, str]:
    from postd.connectors.v1 import connectors_pb2, connectors_pb2_grpc
    from postd_common.devinfra import free_port
    from postd_common.grpcutil import AccessPolicy, create_server
    from postd_common.identity import IdentityVerifier

    class Resolve(connectors_pb2_grpc.ConnectorsServiceServicer):
        async def ResolveAccount(self, request: Any, context: Any) -> Any:
            return connectors_pb2.ResolveAccountResponse(
                matches=[
                    connectors_pb2.AccountMatch(
                        tenant_id="bench-tenant",
                        connection_id=f"conn-{request.external_account_id}",
                    )
                ]
            )

    addr = f"127.0.0.1:{free_port()}"
    resolve = Resolve()  # type: ignore[abstract]
    server = create_server(
        service="connectors",
        address=addr,
        register=[
            lambda s: connectors_pb2_grpc.add_ConnectorsServiceServicer_to_server(resolve, s)
        ],
        service_names=[],
        verifier=IdentityVerifier.from_dir("connectors", identity_dir),
        policy=AccessPolicy(default=frozenset({"webhook-router"})),
    )
    await server.start()
    return server, addr


async def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    from postd_common.devinfra import port_open

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if port_open(port):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


# ------------------------------------------------------------------ load


def signed_webhooks(count: int, accounts: int = 20) -> list[tuple[bytes, str]]:
    """``count`` distinct TikTok webhooks, signed as TikTok signs them."""
    from postd_sandbox import signing

    now = int(time.time())
    out = []
    for i in range(count):
        body = signing.canonical_json(
            {
                "client_key": "bench",
                "event": "post.publish.complete",
                "create_time": now,
                "user_openid": f"act.bench{i % accounts}",
                "content": json.dumps({"publish_id": f"v_pub~{i}", "n": i}),
            }
        )
        out.append((body, signing.tiktok_signature(SECRET, body, now)))
    return out


async def drive(
    url: str, payloads: list[tuple[bytes, str]], *, seconds: float, concurrency: int
) -> tuple[Any, int]:
    import aiohttp

    from bench.baseline import summarize

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    index = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal index
            while time.perf_counter() < deadline and index < len(payloads):
                body, signature = payloads[index]
                index += 1
                started = time.perf_counter()
                async with session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json", "TikTok-Signature": signature},
                ) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return summarize(latencies, elapsed), statuses.get(200, 0)


async def _emitted(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM webhooks.inbound_events "
                "WHERE verdict = 'accepted' AND emitted_at IS NOT NULL"
            )
        )
    finally:
        await conn.close()


async def _measure(dsn: str, front_port: int, seconds: float, concurrency: int) -> dict[str, Any]:
    payloads = signed_webhooks(int(seconds * 6000) + 1000)
    base = f"http://127.0.0.1:{front_port}"
    # Warm up both paths (connections, caches, the router's JIT-free first calls).
    await drive(f"{base}/bare", payloads[:200], seconds=2, concurrency=concurrency)
    await drive(
        f"{base}/webhooks/tiktok", signed_webhooks(300, 5), seconds=3, concurrency=concurrency
    )
    bare, _ = await drive(f"{base}/bare", payloads, seconds=seconds, concurrency=concurrency)
    before = await _emitted(dsn)
    started = time.perf_counter()
    ingest, accepted = await drive(
        f"{base}/webhooks/tiktok", payloads, seconds=seconds, concurrency=concurrency
    )
    ingest_done = time.perf_counter()
    # Polling another process's database: there is no event to wait on.
    while await _emitted(dsn) - before < accepted and time.perf_counter() - ingest_done < 120:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    emitted = await _emitted(dsn) - before
    drained = time.perf_counter()
    return {
        "bare": bare,
        "ingest": ingest,
        "accepted": accepted,
        "emitted": emitted,
        "emitted_per_second": emitted / (drained - started),
        "drain_seconds": drained - ingest_done,
    }


def run(seconds: float, concurrency: int) -> dict[str, Any]:
    from postd_common.devinfra import free_port
    from postd_common.identity import generate_keypair

    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        workdir = Path(tmp)
        identity_dir = workdir / "identity"
        for name in ("webhook-router", "gateway", "connectors"):
            generate_keypair(identity_dir, name)
        with infrastructure(workdir) as (dsn, bootstrap):
            router_port, metrics_port, front_port = free_port(), free_port(), free_port()

            async def main() -> dict[str, Any]:
                server, connectors_addr = await _fake_connectors(identity_dir)
                env = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("POSTD_")},
                    "DATABASE_URL": dsn,
                    "KAFKA_BOOTSTRAP": bootstrap,
                    "POSTD_ENV": "development",
                    "POSTD_LOG_LEVEL": "warning",
                    "POSTD_GRPC_LISTEN": f"127.0.0.1:{router_port}",
                    "POSTD_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
                    "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "webhook-router.key"),
                    "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
                    "POSTD_CONNECTORS_ADDR": connectors_addr,
                    "POSTD_TIKTOK_CLIENT_SECRET": SECRET,
                }
                try:
                    with process(
                        ["-m", "postd_webhook_router"], env, workdir / "router.log"
                    ) as router:
                        await _wait_port(router_port, router, "the webhook router")
                        front_args = [
                            "-m",
                            "bench.webhooks",
                            "--serve-front",
                            str(front_port),
                            f"127.0.0.1:{router_port}",
                            str(identity_dir),
                        ]
                        with process(front_args, env, workdir / "front.log") as front:
                            await _wait_port(front_port, front, "the front")
                            return await _measure(dsn, front_port, seconds, concurrency)
                finally:
                    await server.stop(1)

            result = asyncio.run(main())
            if os.environ.get("BENCH_KEEP_LOGS"):
                for name in ("router.log", "front.log"):
                    print((workdir / name).read_text()[-3000:], file=sys.stderr)
    ingest, bare = result["ingest"], result["bare"]
    return {
        "concurrency": concurrency,
        "seconds": seconds,
        "bare_per_second": bare.per_second,
        "bare_p50_ms": bare.p50_ms,
        "bare_p99_ms": bare.p99_ms,
        "ingest_per_second": ingest.per_second,
        "ingest_p50_ms": ingest.p50_ms,
        "ingest_p99_ms": ingest.p99_ms,
        "accepted": result["accepted"],
        "emitted": result["emitted"],
        "emitted_per_second": result["emitted_per_second"],
        "drain_seconds": result["drain_seconds"],
        "ratio": bare.per_second / ingest.per_second if ingest.per_second else float("inf"),
        "meets_floor": ingest.per_second >= FLOOR_PER_SECOND and ingest.p99_ms < P99_CEILING_MS,
    }


def table(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            "## Webhook ingest (signed TikTok webhooks through an aiohttp front → gRPC → "
            "verified, stored, emitted)",
            "",
            f"{os.cpu_count()} cores, concurrency {r['concurrency']}, {r['seconds']:g} s per "
            "path; front, router, PostgreSQL, broker and this load generator share the machine.",
            "",
            "| path | requests/s | p50 | p99 |",
            "|---|---|---|---|",
            f"| bare aiohttp handler (raw limit) | {r['bare_per_second']:,.0f} | "
            f"{r['bare_p50_ms']:.2f} ms | {r['bare_p99_ms']:.2f} ms |",
            f"| webhook ingest (verified + stored, answered) | {r['ingest_per_second']:,.0f} | "
            f"{r['ingest_p50_ms']:.2f} ms | {r['ingest_p99_ms']:.2f} ms |",
            f"| emitted to webhook.events (end to end) | {r['emitted_per_second']:,.0f} | — | — |",
            "",
            f"ratio bare/ingest: **{r['ratio']:.1f}x**; accepted {r['accepted']:,}, emitted "
            f"{r['emitted']:,} (outbox drained {r['drain_seconds']:.1f} s after the load "
            f"stopped). Floor {FLOOR_PER_SECOND:,}/s with p99 < {P99_CEILING_MS:g} ms: "
            f"{'met' if r['meets_floor'] else 'NOT met'}.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve-front", nargs=3, metavar=("PORT", "ROUTER", "IDENTITY_DIR"))
    args = parser.parse_args(argv)
    if args.serve_front:
        port, router, identity_dir = args.serve_front
        serve_front(int(port), router, identity_dir)
        return {}
    result = run(args.seconds, args.concurrency)
    print(table(result))
    return result


if __name__ == "__main__":
    main()
