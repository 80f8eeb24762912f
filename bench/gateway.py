"""Gateway benchmark: authenticated ``GET /v1/connections`` through the real gateway
against a bare aiohttp handler serving the same bytes, in the same run.

    python -m bench.gateway [--seconds 8] [--rate 1000] [--concurrency 32] [--repeat 3]

Each side is its own process: the gateway (``python -m postd_gateway``: API-key auth
with its cache, the shared rate limiter on PostgreSQL, a gRPC call with service
identity to the connectors contract, proto -> JSON) talks to an in-process fake of the
connectors contract in a third process; the bare handler answers the gateway's own
response body from memory. The load generator runs here:

* closed loop: ``--concurrency`` workers as fast as possible -> throughput and p99;
* open loop: requests *scheduled* at ``--rate`` per second, latency counted from the
  scheduled time (so a stall is not hidden by the generator waiting) -> p99 at that rate.

Figures are reported as ratios against the bare handler measured in the same run; the
floor is gateway p99 < 20 ms at 1,000 requests/s. Prints Markdown, then the dict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import grpc
from aiohttp import web

FLOOR_P99_MS = 20.0
PAGE = 20


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# --------------------------------------------------------------------------- load


async def closed_loop(
    url: str, headers: dict[str, str], *, concurrency: int, seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                async with session.get(url, headers=headers) as answer:
                    await answer.read()
                    if answer.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


async def open_loop(
    url: str, headers: dict[str, str], *, rate: float, seconds: float
) -> dict[str, float]:
    """Requests scheduled every 1/rate s; latency from the scheduled time."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(scheduled: float) -> None:
            nonlocal errors
            try:
                async with session.get(url, headers=headers) as answer:
                    await answer.read()
                    if answer.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - scheduled)

        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter() + 0.05
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {
        "requests": total,
        "errors": errors,
        "offered_rps": rate,
        "achieved_rps": total / elapsed,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000 if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) * 1000 if latencies else float("nan"),
    }


# --------------------------------------------------------------------------- children


async def serve_backends(tenant_id: str, connections: int, port_file: Path, identity: Path) -> None:
    """The connectors contract answering one prebuilt page (after verifying the caller's
    identity and the tenant, as every backend does): the backend's own work is not
    what this benchmark measures."""
    from postd.connectors.v1 import connectors_pb2 as cx
    from postd.connectors.v1 import connectors_pb2_grpc as cx_grpc
    from postd_common.grpcutil import AccessPolicy, create_server
    from postd_common.identity import IdentityVerifier
    from postd_gateway.testing import FakeWorld

    world = FakeWorld()
    for i in range(connections):
        world.add_connection(
            tenant_id, ("facebook", "linkedin", "instagram")[i % 3], name=f"Acct {i}"
        )
    page = cx.ListConnectionsResponse(connections=list(world.connections.values()))

    # Only ListConnections is called; the generated base answers UNIMPLEMENTED otherwise.
    class CannedConnectors(cx_grpc.ConnectorsServiceServicer):
        async def ListConnections(self, request: Any, context: Any) -> Any:
            if request.tenant_id != tenant_id:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no such tenant")
            return page

    server = create_server(
        service="connectors",
        address="127.0.0.1:0",
        register=[
            lambda s: cx_grpc.add_ConnectorsServiceServicer_to_server(
                cast(Any, CannedConnectors)(),
                s,
            )
        ],
        service_names=["postd.connectors.v1.ConnectorsService"],
        verifier=IdentityVerifier.from_dir("connectors", identity),
        policy=AccessPolicy(default=frozenset({"gateway"})),
    )
    await server.start()
    address = f"127.0.0.1:{server.port}"
    port_file.write_text(json.dumps({"connectors": address}))
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop(0)


async def serve_bare(port: int, body_file: Path) -> None:
    body = body_file.read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/connections", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------- orchestration


async def _wait_for(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except (aiohttp.ClientError, OSError, ValueError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{what} did not start")


async def _http_ok(url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return answer.status == 200


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: float(r["p99_ms"]))[len(runs) // 2]


async def run(*, seconds: float, rate: float, concurrency: int, repeat: int = 3) -> dict[str, Any]:
    from postd_common import db
    from postd_common.devinfra import EmbeddedPostgres, free_port
    from postd_common.identity import generate_keypair
    from postd_gateway.adapters.postgres import TenantStore
    from postd_gateway.app import SPEC
    from postd_gateway.domain import issue_key

    load_average = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="postd-bench-gateway-"))
    children: list[asyncio.subprocess.Process] = []
    postgres: EmbeddedPostgres | None = None
    dsn = os.environ.get("DATABASE_URL", "")
    try:
        if not dsn:
            postgres = EmbeddedPostgres(workdir / "pg", free_port(), durable=False)
            dsn = postgres.start()
        await db.migrate_dsn(dsn, "gateway", SPEC.migrations or Path())
        pool = await db.create_pool(dsn, max_size=2)
        store = TenantStore(pool)
        tenant_id = await store.ensure_tenant(f"bench-{uuid.uuid4().hex[:8]}", "Benchmark")
        # 2,000 requests/s allowed: well above the offered load, so every answer is a 200
        # and the limiter's shared row is still leased (2 % = 2,400 requests per write).
        await store.set_tenant_options(tenant_id, rate_limit=120_000, early_access=False)
        issued = issue_key("test")
        await store.add_key(tenant_id, issued.key_id, issued.digest, name="bench", role="viewer")
        await pool.close()
        identity = workdir / "identity"
        for name in ("gateway", "vault", "connectors", "publisher", "webhook-router", "health"):
            generate_keypair(identity, name)

        def spawn(name: str, *args: str, env: dict[str, str] | None = None) -> Awaitable[Any]:
            log = (workdir / f"{name}.log").open("wb")
            return asyncio.create_subprocess_exec(
                sys.executable, *args, env={**os.environ, **(env or {})}, stdout=log, stderr=log
            )

        port_file = workdir / "backends.json"
        children.append(
            await spawn(
                "backends",
                "-m",
                "bench.gateway",
                "_backends",
                "--tenant",
                tenant_id,
                "--connections",
                str(PAGE),
                "--port-file",
                str(port_file),
                "--identity",
                str(identity),
            )
        )
        await _wait_for(lambda: _exists(port_file), "fake backends")
        addresses = json.loads(port_file.read_text())
        gateway_port = free_port()
        env = {
            "POSTD_ENV": "test",
            "POSTD_LOG_LEVEL": "warning",
            "DATABASE_URL": dsn,
            "KAFKA_BOOTSTRAP": "127.0.0.1:9",  # only /healthz would look
            "POSTD_GATEWAY_PORT": str(gateway_port),
            "POSTD_IDENTITY_KEY_FILE": str(identity / "gateway.key"),
            "POSTD_IDENTITY_TRUST_DIR": str(identity),
        }
        for name, address in addresses.items():
            env[f"POSTD_{name.upper().replace('-', '_')}_ADDR"] = address
        children.append(await spawn("gateway", "-m", "postd_gateway", env=env))
        gateway = f"http://127.0.0.1:{gateway_port}"
        await _wait_for(lambda: _http_ok(gateway + "/readyz"), "gateway")
        headers = {"Authorization": f"Bearer {issued.secret}"}
        url = f"{gateway}/v1/connections?limit={PAGE}"
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as first:
            body = await first.read()
            assert first.status == 200, body[:300]
        body_file = workdir / "body.json"
        body_file.write_bytes(body)
        bare_port = free_port()
        children.append(
            await spawn(
                "bare",
                "-m",
                "bench.gateway",
                "_bare",
                "--port",
                str(bare_port),
                "--body-file",
                str(body_file),
            )
        )
        bare = f"http://127.0.0.1:{bare_port}/v1/connections?limit={PAGE}"
        await _wait_for(lambda: _http_ok(bare), "bare handler")

        # Warm both up (JIT-free Python, but pools, caches and TCP connections).
        await closed_loop(url, headers, concurrency=concurrency, seconds=1.0)
        await closed_loop(bare, headers, concurrency=concurrency, seconds=1.0)
        names = ("backends", "gateway", "bare")
        pids = {name: child.pid for name, child in zip(names, children, strict=True)}
        pids["load generator"] = os.getpid()

        async def measured(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            result = await work
            used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
            result["cpu_us_per_request"] = {
                name: round(seconds_used / max(1, result["requests"]) * 1e6, 1)
                for name, seconds_used in used.items()
                if seconds_used > 0
            }
            return result

        bare_closed = await measured(
            closed_loop(bare, headers, concurrency=concurrency, seconds=seconds)
        )
        gateway_closed = await measured(
            closed_loop(url, headers, concurrency=concurrency, seconds=seconds)
        )
        bare_runs: list[dict[str, Any]] = []
        gateway_runs: list[dict[str, Any]] = []
        for _ in range(repeat):  # alternate, so both sides see the same neighbours
            bare_runs.append(await measured(open_loop(bare, headers, rate=rate, seconds=seconds)))
            gateway_runs.append(await measured(open_loop(url, headers, rate=rate, seconds=seconds)))
        bare_open = _median_run(bare_runs)
        gateway_open = _median_run(gateway_runs)
    finally:
        for child in children:
            if child.returncode is None:
                child.terminate()
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), 15)
            except TimeoutError:
                child.kill()
                await child.wait()
        if postgres is not None:
            postgres.stop()
    return {
        "load_average": load_average,
        "cpus": os.cpu_count(),
        "gateway_open_p99_runs_ms": [r["p99_ms"] for r in gateway_runs],
        "bare_open_p99_runs_ms": [r["p99_ms"] for r in bare_runs],
        "page_size": PAGE,
        "body_bytes": len(body),
        "concurrency": concurrency,
        "seconds": seconds,
        "bare_closed": bare_closed,
        "gateway_closed": gateway_closed,
        "bare_open": bare_open,
        "gateway_open": gateway_open,
        "throughput_ratio": gateway_closed["rps"] / bare_closed["rps"],
        "p99_ratio_at_rate": gateway_open["p99_ms"] / bare_open["p99_ms"],
        "floor_p99_ms": FLOOR_P99_MS,
        "floor_met": gateway_open["p99_ms"] < FLOOR_P99_MS
        and gateway_open["errors"] == 0
        and gateway_open["achieved_rps"] >= 0.95 * rate,
    }


async def _exists(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


def _closed_row(name: str, r: dict[str, Any]) -> str:
    return f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |"


def _open_row(name: str, r: dict[str, Any]) -> str:
    return (
        f"| {name} | {r['achieved_rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
        f"| {r['max_ms']:.1f} | {r['errors']} |"
    )


def markdown(result: dict[str, Any]) -> str:
    bc, gc = result["bare_closed"], result["gateway_closed"]
    bo, go = result["bare_open"], result["gateway_open"]
    rate = go["offered_rps"]
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in gc["cpu_us_per_request"].items())
    runs = ", ".join(f"{p:.1f}" for p in result["gateway_open_p99_runs_ms"])
    lines = [
        f"### Gateway: authenticated GET /v1/connections ({result['page_size']} items, "
        f"{result['body_bytes']} bytes)",
        "",
        f"Load average at start {result['load_average']:.2f} on {result['cpus']} CPUs "
        "(the machine is shared; every figure below is from this one run).",
        "",
        f"Closed loop, {result['concurrency']} concurrent, {result['seconds']:.0f} s each:",
        "",
        "| | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
        _closed_row("bare aiohttp handler", bc),
        _closed_row("gateway", gc),
        f"| **ratio gateway/bare** | **{result['throughput_ratio']:.2f}** | | | |",
        "",
        f"CPU per request (µs), gateway closed loop: {cpu}",
        "",
        f"Open loop at {rate:,.0f} requests/s, latency from the scheduled time "
        f"(median run of {len(result['gateway_open_p99_runs_ms'])}):",
        "",
        "| | achieved/s | p50 ms | p99 ms | max ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
        _open_row("bare aiohttp handler", bo),
        _open_row("gateway", go),
        "",
        f"Gateway p99 per run (ms): {runs}.",
        "",
        f"Floor: gateway p99 < {result['floor_p99_ms']:.0f} ms at {rate:,.0f}/s: "
        f"**{'met' if result['floor_met'] else 'NOT met'}** "
        f"(p99 ratio gateway/bare {result['p99_ratio_at_rate']:.1f}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if args and args[0] == "_backends":
        parser = argparse.ArgumentParser()
        parser.add_argument("--tenant", required=True)
        parser.add_argument("--connections", type=int, required=True)
        parser.add_argument("--port-file", type=Path, required=True)
        parser.add_argument("--identity", type=Path, required=True)
        ns = parser.parse_args(args[1:])
        asyncio.run(serve_backends(ns.tenant, ns.connections, ns.port_file, ns.identity))
        return
    if args and args[0] == "_bare":
        parser = argparse.ArgumentParser()
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--body-file", type=Path, required=True)
        ns = parser.parse_args(args[1:])
        asyncio.run(serve_bare(ns.port, ns.body_file))
        return
    parser = argparse.ArgumentParser(prog="python -m bench.gateway")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="open-loop runs per side")
    ns = parser.parse_args(args)
    result = asyncio.run(
        run(seconds=ns.seconds, rate=ns.rate, concurrency=ns.concurrency, repeat=ns.repeat)
    )
    print(markdown(result))
    print()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
