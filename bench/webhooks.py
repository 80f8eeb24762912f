"""Signed-webhook ingest through the gateway, against a bare aiohttp handler in the same run.

``python -m bench.webhooks [--seconds S] [--concurrency C] [--rate R] [--routers N]
[--load-processes K] [--repeat M]``

Every part is its own process, all on this machine:

* PostgreSQL (embedded, **durable**: fsync and synchronous commit on) and the broker;
* the real gateway (``python -m postd_gateway``), whose ``/webhooks/{platform}`` route
  hands the raw request to the router over gRPC (plain channel, service identity per
  call), its channel balancing round robin over the router replicas;
* the webhook router: by default one process doing everything (``--routers 0``: verify,
  store with group commit and answer, then normalise, route and relay to Kafka on the
  same event loop); ``--routers N`` runs N API replicas (``POSTD_WEBHOOKS_WORKERS=
  separate``: verify, store, answer) and one ``python -m postd_webhook_router worker``
  (normalise, route, relay). On 2 cores the split measured no faster (the extra
  processes cost CPU the single one does not), so the default is the single process;
* a bare aiohttp app (``POST /bare``: read the body, answer 200) — the raw limit;
* ``--load-processes`` load generators: a lean HTTP/1.1 keep-alive client (a few
  tens of µs of CPU per request), the same one for both sides.

Each round measures the bare handler, then ingest, the same way: closed loop (``C``
connections back to back: throughput and its latency) and open loop (requests
*scheduled* at ``R``/s, latency counted from the scheduled time, so a stall is not
hidden). Every webhook is a distinct TikTok event signed ``t=…,s=…`` as TikTok signs
it; an answer means the router verified it and committed its row. After each ingest
run the bench waits until every accepted event is on ``webhook.events``.
CPU per request is read from /proc for every process, so the report says where the
machine's two cores went.
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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FLOOR_PER_SECOND = 2_000
P99_CEILING_MS = 50.0
SECRET = "bench-tiktok-client-secret"  # noqa: S105 - a throwaway bench value


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# ------------------------------------------------------------------ the load generator


def signed_webhooks(count: int, run: str, accounts: int = 20) -> list[tuple[bytes, str]]:
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
                "content": json.dumps({"publish_id": f"v_pub~{run}~{i}", "n": i}),
            }
        )
        out.append((body, signing.tiktok_signature(SECRET, body, now)))
    return out


def requests_for(port: int, path: str, payloads: list[tuple[bytes, str]]) -> list[bytes]:
    """The raw HTTP/1.1 requests (keep-alive), built before the clock starts."""
    return [
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nTikTok-Signature: {signature}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for body, signature in payloads
    ]


class Connection:
    """One keep-alive HTTP/1.1 connection: write a request, read one answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> int:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await self.reader.readexactly(length)
            return int(head[9:12])
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            return 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def load(args: argparse.Namespace) -> dict[str, Any]:
    """One load process: closed loop (``connections`` back to back) or open loop
    (``rate`` requests/s scheduled, served by up to ``connections`` connections)."""
    run = f"{args.run}-{os.getpid()}"
    count = int(args.seconds * (args.rate or 6000)) + 500
    payloads = signed_webhooks(count, run)
    queue = requests_for(args.port, args.path, payloads)
    latencies: list[float] = []
    finished: list[float] = []
    statuses: dict[int, int] = {}
    pool = [Connection(args.port) for _ in range(args.connections)]
    for connection in pool:  # connect before the clock starts
        connection.reader, connection.writer = await asyncio.open_connection("127.0.0.1", args.port)
    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    cpu_began = time.process_time()
    began = time.perf_counter()
    deadline = began + args.seconds
    index = 0

    async def closed(connection: Connection) -> None:
        nonlocal index
        while time.perf_counter() < deadline and index < len(queue):
            request = queue[index]
            index += 1
            started = time.perf_counter()
            status = await connection.exchange(request)
            finished.append(time.perf_counter())
            latencies.append(finished[-1] - started)
            statuses[status] = statuses.get(status, 0) + 1

    if args.rate == 0:
        await asyncio.gather(*(closed(c) for c in pool))
    else:
        idle: asyncio.Queue[Connection] = asyncio.Queue()
        for connection in pool:
            idle.put_nowait(connection)

        async def one(request: bytes, scheduled: float) -> None:
            connection = await idle.get()
            try:
                status = await connection.exchange(request)
            finally:
                idle.put_nowait(connection)
            finished.append(time.perf_counter())
            latencies.append(finished[-1] - scheduled)
            statuses[status] = statuses.get(status, 0) + 1

        tasks = []
        total = int(args.rate * args.seconds)
        for i in range(total):
            scheduled = began + i / args.rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(queue[i], scheduled)))
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    in_window = sum(1 for t in finished if t <= deadline)
    for connection in pool:
        connection.close()
    return {
        "latencies": latencies,
        "statuses": statuses,
        "elapsed": elapsed,
        "cpu": cpu,
        "in_window": in_window,
    }


# ------------------------------------------------------------------ the bare handler


def serve_bare(port: int) -> None:
    from aiohttp import web

    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/bare", bare)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# ------------------------------------------------------------------ processes and CPU


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values)
    return total - values[3] - values[4], total


@dataclass
class Layout:
    """Which pids are which part, to split CPU time by part."""

    parts: dict[str, list[int]] = field(default_factory=dict)
    postgres: int | None = None

    def pids(self) -> dict[str, list[int]]:
        out = {k: list(v) for k, v in self.parts.items()}
        if self.postgres is not None:
            out["postgresql"] = [self.postgres, *children_of(self.postgres)]
        return out

    def sample(self) -> tuple[dict[str, float], tuple[float, float]]:
        return (
            {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.pids().items()},
            machine_cpu(),
        )


def cpu_report(
    before: tuple[dict[str, float], tuple[float, float]],
    after: tuple[dict[str, float], tuple[float, float]],
    requests: int,
    seconds: float,
) -> dict[str, Any]:
    used = {k: after[0].get(k, 0.0) - before[0].get(k, 0.0) for k in after[0]}
    busy = (after[1][0] - before[1][0]) / os.sysconf("SC_CLK_TCK")
    return {
        "us_per_request": {k: round(v / max(1, requests) * 1e6) for k, v in used.items()},
        "cores": {k: round(v / seconds, 2) for k, v in used.items()},
        "machine_busy_cores": round(busy / seconds, 2),
        "others_cores": round((busy - sum(used.values())) / seconds, 2),
    }


# BENCH_WEBHOOKS_PROFILE=router,gateway: run those under cProfile (slower), print where
# their time went at the end and keep the profiles in bench/results/.
PROFILE = {p.strip() for p in os.environ.get("BENCH_WEBHOOKS_PROFILE", "").split(",") if p}
PROFILE_DIR = ROOT / "bench" / "results"


def profiled(part: str, args: list[str]) -> list[str]:
    if part not in PROFILE:
        return args
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    return ["-m", "cProfile", "-o", str(PROFILE_DIR / f"webhooks-{part}.prof"), *args]


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str], log: Path, layout: Layout, part: str
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 - the child owns it
    )
    layout.parts.setdefault(part, []).append(proc.pid)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    from postd_common.devinfra import port_open

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if port_open(port):
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


async def _fake_connectors(identity_dir: Path) -> tuple[Any, str]:
    """ResolveAccount for the worker (one match per account; cached by the router)."""
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


# ------------------------------------------------------------------ measuring


async def drive(
    port: int,
    path: str,
    *,
    seconds: float,
    connections: int,
    rate: float,
    processes: int,
    start_at: float | None = None,
) -> dict[str, Any]:
    """Run the load in ``processes`` load-generator processes; merge their results."""
    if start_at is None:
        start_at = time.time() + 1.5  # every process is connected and waiting by then
    per = max(1, connections // processes)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.webhooks",
            "_load",
            "--port",
            str(port),
            "--path",
            path,
            "--seconds",
            str(seconds),
            "--connections",
            str(per),
            "--rate",
            str(rate / processes),
            "--start-at",
            str(start_at),
            "--run",
            uuid.uuid4().hex[:10],
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in procs))
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    elapsed = cpu = 0.0
    in_window = 0
    for out, _ in outputs:
        result = json.loads(out)
        cpu += result["cpu"]
        in_window += result["in_window"]
        latencies += result["latencies"]
        for status, n in result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
        elapsed = max(elapsed, result["elapsed"])
    return {
        "requests": len(latencies),
        "per_second": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000 if latencies else float("nan"),
        "ok": statuses.get("200", 0),
        "errors": sum(n for s, n in statuses.items() if s != "200"),
        "elapsed": elapsed,
        "load_cpu_seconds": cpu,
        "in_window": in_window,
    }


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


@dataclass
class Setup:
    pg: Any  # an asyncpg connection for counters
    dsn: str
    gateway_port: int
    bare_port: int
    gateway_metrics_port: int
    layout: Layout
    seconds: float
    concurrency: int
    rate: float
    processes: int


async def wal_sample(conn: Any) -> tuple[float, float, float]:
    """(WAL fsyncs, their milliseconds, commits) so far: PostgreSQL's own counters."""
    row = await conn.fetchrow(
        "SELECT (SELECT coalesce(sum(fsyncs), 0) FROM pg_stat_io WHERE object = 'wal') AS f, "
        "(SELECT coalesce(sum(fsync_time), 0) FROM pg_stat_io WHERE object = 'wal') AS t, "
        "(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS c"
    )
    return float(row["f"]), float(row["t"]), float(row["c"])


def batch_sample(metrics_port: int) -> tuple[float, float]:
    """(IngestWebhooks calls, webhooks in them) so far, from the gateway's metrics."""
    import urllib.request

    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values = {"_count": 0.0, "_sum": 0.0}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        for suffix in values:
            if name == f"postd_gateway_webhook_batch_webhooks{suffix}":
                values[suffix] = float(value)
    return values["_count"], values["_sum"]


async def measured(setup: Setup, port: int, path: str, *, rate: float) -> dict[str, Any]:
    """One run; CPU and WAL counters are read over exactly the loaded window."""
    layout = setup.layout
    start_at = time.time() + 2.0  # the load processes are connected and waiting by then
    running = asyncio.create_task(
        drive(
            port,
            path,
            seconds=setup.seconds,
            connections=setup.concurrency if rate == 0 else max(setup.concurrency, 64),
            rate=rate,
            processes=setup.processes,
            start_at=start_at,
        )
    )
    await asyncio.sleep(max(0.0, start_at - time.time()))
    before, wal_before = layout.sample(), await wal_sample(setup.pg)
    batches_before = await asyncio.to_thread(batch_sample, setup.gateway_metrics_port)
    await asyncio.sleep(setup.seconds)
    after, wal_after = layout.sample(), await wal_sample(setup.pg)
    batches_after = await asyncio.to_thread(batch_sample, setup.gateway_metrics_port)
    result = await running
    calls, webhooks = (b - a for a, b in zip(batches_before, batches_after, strict=True))
    result["batches"] = {
        "calls_per_second": calls / setup.seconds,
        "mean_webhooks": webhooks / calls if calls else 0.0,
    }
    # The load generators report their own CPU over the same window.
    before[0]["load generator"] = 0.0
    after[0]["load generator"] = result["load_cpu_seconds"]
    # Per request answered within the window (an overloaded open loop answers more later).
    result["cpu"] = cpu_report(before, after, result["in_window"], setup.seconds)
    fsyncs, fsync_ms, commits = (b - a for a, b in zip(wal_before, wal_after, strict=True))
    result["wal"] = {
        "fsyncs_per_second": fsyncs / setup.seconds,
        "fsync_busy": fsync_ms / 1000 / setup.seconds,  # share of the time in WAL fsync
        "fsync_ms": fsync_ms / fsyncs if fsyncs else 0.0,
        "commits_per_second": commits / setup.seconds,
    }
    return result


async def one_round(setup: Setup) -> dict[str, Any]:
    gateway, bare = setup.gateway_port, setup.bare_port
    out: dict[str, Any] = {}
    out["bare_closed"] = await measured(setup, bare, "/bare", rate=0)
    before = await _emitted(setup.dsn)
    started = time.perf_counter()
    out["ingest_closed"] = await measured(setup, gateway, "/webhooks/tiktok", rate=0)
    ingest_done = time.perf_counter()
    accepted = out["ingest_closed"]["ok"]
    while await _emitted(setup.dsn) - before < accepted:
        if time.perf_counter() - ingest_done > 120:
            break
        await asyncio.sleep(0.1)
    emitted = await _emitted(setup.dsn) - before
    drained = time.perf_counter()
    out["emitted"] = emitted
    out["emitted_per_second"] = emitted / (drained - started)
    out["drain_seconds"] = drained - ingest_done
    if setup.rate:
        out["bare_open"] = await measured(setup, bare, "/bare", rate=setup.rate)
        before = await _emitted(setup.dsn)
        out["ingest_open"] = await measured(setup, gateway, "/webhooks/tiktok", rate=setup.rate)
        while await _emitted(setup.dsn) - before < out["ingest_open"]["ok"]:
            if time.perf_counter() - ingest_done > 240:
                break
            await asyncio.sleep(0.1)
    return out


def batching_env(args: argparse.Namespace) -> dict[str, str]:
    """The gateway's webhook batching settings this run overrides."""
    chosen = {
        "POSTD_GATEWAY_WEBHOOK_BATCH": args.batch,
        "POSTD_GATEWAY_WEBHOOK_LINGER_MS": args.linger_ms,
        "POSTD_GATEWAY_WEBHOOK_BATCH_CALLS": args.batch_calls,
    }
    return {k: f"{v:g}" for k, v in chosen.items() if v is not None}


def batching_text(args: argparse.Namespace) -> str:
    from postd_gateway.config import Settings

    batch = args.batch if args.batch is not None else Settings.webhook_batch_max
    if batch <= 1:
        return "one IngestWebhook call per webhook"
    linger = (
        args.linger_ms
        if args.linger_ms is not None
        else (Settings.webhook_batch_linger_seconds * 1000)
    )
    calls = args.batch_calls if args.batch_calls is not None else Settings.webhook_batch_calls
    wait = f"a {linger:g} ms linger" if linger else "no linger"
    return (
        f"concurrent webhooks batched into IngestWebhooks calls of up to {batch}, {wait}, "
        f"at most {calls} calls in flight"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from postd_common.devinfra import EmbeddedBroker, EmbeddedPostgres, free_port
    from postd_common.identity import generate_keypair

    single = args.routers == 0

    load_average = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        workdir = Path(tmp)
        identity_dir = workdir / "identity"
        for name in ("webhook-router", "gateway", "connectors"):
            generate_keypair(identity_dir, name)
        layout = Layout()
        pg = EmbeddedPostgres(workdir / "pg", free_port(), log_file=workdir / "pg.log")
        broker = EmbeddedBroker(free_port(), log_file=workdir / "broker.log")
        dsn = pg.start()
        layout.postgres = pg.pid
        try:
            bootstrap = broker.start()
            # The schema first, once, so the replicas do not race to migrate it.
            migrate = subprocess.run(
                [sys.executable, "-m", "postd_webhook_router", "migrate"],
                env={
                    **os.environ,
                    "DATABASE_URL": dsn,
                    "KAFKA_BOOTSTRAP": bootstrap,
                    "POSTD_ENV": "development",
                },
                cwd=ROOT,
                capture_output=True,
                check=False,
            )
            if migrate.returncode != 0:
                raise RuntimeError(migrate.stderr.decode()[-2000:])

            async def main() -> dict[str, Any]:
                server, connectors_addr = await _fake_connectors(identity_dir)
                base = {
                    **{k: v for k, v in os.environ.items() if not k.startswith("POSTD_")},
                    "DATABASE_URL": dsn,
                    "KAFKA_BOOTSTRAP": bootstrap,
                    "POSTD_LOG_LEVEL": "warning",
                    "POSTD_IDENTITY_TRUST_DIR": str(identity_dir),
                }
                router = {
                    **base,
                    "POSTD_ENV": "development",
                    "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "webhook-router.key"),
                    "POSTD_CONNECTORS_ADDR": connectors_addr,
                    "POSTD_TIKTOK_CLIENT_SECRET": SECRET,
                }
                if args.process_linger_ms is not None:
                    router["POSTD_WEBHOOKS_PROCESS_LINGER_MS"] = f"{args.process_linger_ms:g}"
                with contextlib.ExitStack() as stack:
                    ports = []
                    for i in range(1 if single else args.routers):
                        port = free_port()
                        env = {
                            **router,
                            "POSTD_GRPC_LISTEN": f"127.0.0.1:{port}",
                            "POSTD_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
                            "POSTD_WEBHOOKS_WORKERS": "inline" if single else "separate",
                        }
                        proc = stack.enter_context(
                            process(
                                profiled("router", ["-m", "postd_webhook_router"]),
                                env,
                                workdir / f"router-{i}.log",
                                layout,
                                "router (all)" if single else "router API",
                            )
                        )
                        await _wait_port(port, proc, "a webhook router")
                        ports.append(port)
                    if not single:
                        stack.enter_context(
                            process(
                                ["-m", "postd_webhook_router", "worker"],
                                {**router, "POSTD_METRICS_LISTEN": f"127.0.0.1:{free_port()}"},
                                workdir / "worker.log",
                                layout,
                                "router worker",
                            )
                        )
                    gateway_port, bare_port = free_port(), free_port()
                    gateway_metrics_port = free_port()
                    targets = ",".join(f"127.0.0.1:{p}" for p in ports)
                    gateway_env = {
                        **base,
                        "POSTD_ENV": "test",
                        "POSTD_GATEWAY_PORT": str(gateway_port),
                        "POSTD_METRICS_LISTEN": f"127.0.0.1:{gateway_metrics_port}",
                        "POSTD_IDENTITY_KEY_FILE": str(identity_dir / "gateway.key"),
                        "POSTD_WEBHOOK_ROUTER_ADDR": f"ipv4:{targets}",
                        **batching_env(args),
                        # Nothing else is called on this route.
                        **{
                            f"POSTD_{name}_ADDR": "127.0.0.1:9"
                            for name in ("CONNECTORS", "PUBLISHER", "HEALTH", "VAULT")
                        },
                    }
                    gateway = stack.enter_context(
                        process(
                            profiled("gateway", ["-m", "postd_gateway"]),
                            gateway_env,
                            workdir / "gateway.log",
                            layout,
                            "gateway",
                        )
                    )
                    bare = stack.enter_context(
                        process(
                            ["-m", "bench.webhooks", "_bare", "--port", str(bare_port)],
                            base,
                            workdir / "bare.log",
                            layout,
                            "bare aiohttp",
                        )
                    )
                    await _wait_port(gateway_port, gateway, "the gateway")
                    await _wait_port(bare_port, bare, "the bare handler")
                    layout.parts["broker"] = [broker.pid] if broker.pid else []
                    layout.parts["bench (fake connectors)"] = [os.getpid()]
                    import asyncpg

                    pg_conn = await asyncpg.connect(dsn)
                    # WAL fsync time in pg_stat_io (costs two clock reads per fsync).
                    await pg_conn.execute("ALTER SYSTEM SET track_wal_io_timing = on")
                    await pg_conn.execute("SELECT pg_reload_conf()")
                    setup = Setup(
                        pg_conn,
                        dsn,
                        gateway_port,
                        bare_port,
                        gateway_metrics_port,
                        layout,
                        args.seconds,
                        args.concurrency,
                        args.rate,
                        args.load_processes,
                    )
                    # Warm both paths (connections, caches, the replicas' channels).
                    for port, path in ((bare_port, "/bare"), (gateway_port, "/webhooks/tiktok")):
                        await drive(port, path, seconds=2.0, connections=16, rate=0, processes=1)
                    rounds = [await one_round(setup) for _ in range(args.repeat)]
                    await pg_conn.close()
                    stack.close()
                await server.stop(1)
                return {"rounds": rounds}

            result = asyncio.run(main())
            for part in sorted(PROFILE):
                import pstats

                prof = PROFILE_DIR / f"webhooks-{part}.prof"
                print(f"--- {prof} (whole run, by own time)", file=sys.stderr)
                pstats.Stats(str(prof), stream=sys.stderr).sort_stats("tottime").print_stats(30)
            if os.environ.get("BENCH_KEEP_LOGS"):
                for log in sorted(workdir.glob("*.log")):
                    if log.name not in ("pg.log", "broker.log"):
                        print(f"--- {log.name}", log.read_text()[-2000:], file=sys.stderr)
        finally:
            broker.stop()
            pg.stop()
    layout_text = (
        "one router process (API, processing and relay on one event loop)"
        if single
        else f"{args.routers} router API replicas (verify + group-committed store) behind "
        "the gateway's round-robin channel, 1 router worker (process + relay)"
    )
    return {
        **result,
        "layout": layout_text,
        "batching": batching_text(args),
        "load_average": load_average,
        "cpus": os.cpu_count(),
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "load_processes": args.load_processes,
    }


# ------------------------------------------------------------------ report


def _span(values: list[float], fmt: str) -> str:
    low, high = min(values), max(values)
    if len(values) == 1 or fmt.format(low) == fmt.format(high):
        return fmt.format(low)
    return f"{fmt.format(low)} to {fmt.format(high)}"


def _cpu_line(cpu: dict[str, Any]) -> str:
    parts = sorted(cpu["us_per_request"].items(), key=lambda kv: -kv[1])
    per = ", ".join(f"{name} {us:,}" for name, us in parts if us)
    return (
        f"{per}; machine busy {cpu['machine_busy_cores']:.2f} of 2 cores, of which "
        f"{max(0.0, cpu['others_cores']):.2f} by other work on the machine"
    )


SYSTEM_PARTS = ("gateway", "router API", "router worker", "router (all)", "postgresql", "broker")


def bottleneck(run: dict[str, Any], cores: int) -> str:
    """One sentence naming what limited one ingest run, from its CPU and WAL figures."""
    cpu, wal = run["cpu"], run["wal"]
    system_us = sum(v for k, v in cpu["us_per_request"].items() if k in SYSTEM_PARTS)
    ceiling = cores * 1e6 / system_us if system_us else float("inf")
    heaviest = max(
        (k for k in cpu["us_per_request"] if k in SYSTEM_PARTS),
        key=lambda k: cpu["us_per_request"][k],
    )
    cost = (
        f"the stack needs {system_us:,.0f} µs of CPU per webhook ({heaviest} the most), so "
        f"{cores} idle cores could ingest at most ~{ceiling:,.0f}/s"
    )
    if cpu["machine_busy_cores"] >= 0.9 * cores:
        return (
            f"CPU: the {cores} cores were saturated ({max(0.0, cpu['others_cores']):.2f} "
            f"cores by other work on the machine); {cost}."
        )
    if wal["fsync_busy"] >= 0.5:
        return (
            f"durable commits: PostgreSQL's WAL was in fsync {wal['fsync_busy']:.0%} of the "
            f"time ({wal['fsyncs_per_second']:,.0f} fsyncs/s, {wal['fsync_ms']:.1f} ms "
            f"each), and every answer waits for one; {cost}."
        )
    return f"latency of the path at this concurrency, not one saturated resource; {cost}."


def _batch_line(batches: dict[str, Any]) -> str:
    if not batches["calls_per_second"]:
        return "one IngestWebhook call per webhook"
    return (
        f"{batches['calls_per_second']:,.0f} IngestWebhooks calls/s of "
        f"{batches['mean_webhooks']:.1f} webhooks on average"
    )


def _wal_line(wal: dict[str, Any]) -> str:
    return (
        f"{wal['commits_per_second']:,.0f} commits/s, {wal['fsyncs_per_second']:,.0f} WAL "
        f"fsyncs/s of {wal['fsync_ms']:.1f} ms each (WAL in fsync {wal['fsync_busy']:.0%} "
        "of the time)"
    )


def table(r: dict[str, Any]) -> str:
    rounds = r["rounds"]

    def col(key: str, metric: str) -> list[float]:
        return [float(x[key][metric]) for x in rounds]

    bare_rate, ingest_rate = col("bare_closed", "per_second"), col("ingest_closed", "per_second")
    ratios = [b / i if i else float("inf") for b, i in zip(bare_rate, ingest_rate, strict=True)]
    lines = [
        "## Webhook ingest through the gateway (signed TikTok webhooks: verified, "
        "durably stored, emitted)",
        "",
        f"{r['cpus']} cores shared by everything (load average {r['load_average']:.1f} at "
        f"start). Layout: gateway (1 process; {r['batching']}) → {r['layout']}; "
        "PostgreSQL durable (fsync on); "
        f"{r['load_processes']} load-generator processes. {len(rounds)} rounds; figures are "
        "the range over rounds.",
        "",
        f"Closed loop, {r['concurrency']} connections, {r['seconds']:g} s per side per round:",
        "",
        "| path | requests/s | p50 | p99 | errors |",
        "|---|---:|---:|---:|---:|",
        f"| bare aiohttp handler (same load generator) | {_span(bare_rate, '{:,.0f}')} | "
        f"{_span(col('bare_closed', 'p50_ms'), '{:.1f}')} ms | "
        f"{_span(col('bare_closed', 'p99_ms'), '{:.1f}')} ms | "
        f"{sum(int(x['bare_closed']['errors']) for x in rounds)} |",
        f"| webhook ingest through the gateway (answered after commit) | "
        f"{_span(ingest_rate, '{:,.0f}')} | {_span(col('ingest_closed', 'p50_ms'), '{:.1f}')} ms"
        f" | {_span(col('ingest_closed', 'p99_ms'), '{:.1f}')} ms | "
        f"{sum(int(x['ingest_closed']['errors']) for x in rounds)} |",
        f"| emitted to webhook.events (end to end) | "
        f"{_span([float(x['emitted_per_second']) for x in rounds], '{:,.0f}')} | — | — | — |",
        "",
        f"Ratio bare/ingest: **{_span(ratios, '{:.1f}')}x**. Outbox drained "
        f"{_span([float(x['drain_seconds']) for x in rounds], '{:.1f}')} s after the load "
        "stopped; every accepted event was emitted: "
        f"{all(x['emitted'] >= x['ingest_closed']['ok'] for x in rounds)}.",
        "",
        "CPU µs per ingest request, by part (last round): "
        + _cpu_line(rounds[-1]["ingest_closed"]["cpu"]),
        "",
        "Gateway → router calls during ingest (last round): "
        + _batch_line(rounds[-1]["ingest_closed"]["batches"]),
        "",
        "CPU µs per bare request (last round): " + _cpu_line(rounds[-1]["bare_closed"]["cpu"]),
        "",
        "PostgreSQL during ingest (last round): " + _wal_line(rounds[-1]["ingest_closed"]["wal"]),
        "",
        "**Bottleneck** (closed loop, last round): "
        + bottleneck(rounds[-1]["ingest_closed"], r["cpus"]),
    ]
    if r["rate"]:
        meets = [
            x["ingest_open"]["p99_ms"] < P99_CEILING_MS
            and x["ingest_open"]["errors"] == 0
            and x["ingest_open"]["per_second"] >= 0.97 * r["rate"]
            for x in rounds
        ]
        lines += [
            "",
            f"Open loop at {r['rate']:,.0f} requests/s offered (latency from the scheduled "
            "send time):",
            "",
            "| path | achieved/s | p50 | p99 | max | errors |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for key, label in (
            ("bare_open", "bare aiohttp handler"),
            ("ingest_open", "webhook ingest"),
        ):
            lines.append(
                f"| {label} | {_span(col(key, 'per_second'), '{:,.0f}')} | "
                f"{_span(col(key, 'p50_ms'), '{:.1f}')} ms | "
                f"{_span(col(key, 'p99_ms'), '{:.1f}')} ms | "
                f"{_span(col(key, 'max_ms'), '{:.0f}')} ms | "
                f"{sum(int(x[key]['errors']) for x in rounds)} |"
            )
        lines += [
            "",
            "CPU µs per ingest request at this rate (last round): "
            + _cpu_line(rounds[-1]["ingest_open"]["cpu"]),
            "",
            "Gateway → router calls at this rate (last round): "
            + _batch_line(rounds[-1]["ingest_open"]["batches"]),
            "",
            "PostgreSQL at this rate (last round): " + _wal_line(rounds[-1]["ingest_open"]["wal"]),
            "",
            "**Bottleneck** (open loop, last round): "
            + bottleneck(rounds[-1]["ingest_open"], r["cpus"]),
            "",
            (
                f"Floor {FLOOR_PER_SECOND:,}/s with p99 < {P99_CEILING_MS:g} ms (open loop at "
                f"{r['rate']:,.0f}/s): **{'met' if all(meets) else 'NOT met'}** in "
                f"{sum(meets)} of {len(meets)} rounds."
                if r["rate"] >= FLOOR_PER_SECOND
                else f"p99 < {P99_CEILING_MS:g} ms at {r['rate']:,.0f}/s: "
                f"{'held' if all(meets) else 'NOT held'} in {sum(meets)} of {len(meets)} "
                f"rounds (the floor itself needs --rate {FLOOR_PER_SECOND})."
            ),
        ]
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list and args_list[0] == "_load":
        parser = argparse.ArgumentParser()
        for name in ("--port", "--connections"):
            parser.add_argument(name, type=int, required=True)
        for name in ("--seconds", "--rate", "--start-at"):
            parser.add_argument(name, type=float, required=True)
        parser.add_argument("--path", required=True)
        parser.add_argument("--run", required=True)
        result = asyncio.run(load(parser.parse_args(args_list[1:])))
        print(json.dumps(result))
        return {}
    if args_list and args_list[0] == "_bare":
        serve_bare(int(args_list[2]))
        return {}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=2000.0, help="open loop; 0 skips it")
    parser.add_argument(
        "--routers", type=int, default=0, help="router API replicas + 1 worker; 0: one process"
    )
    parser.add_argument("--load-processes", type=int, default=2)
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="webhooks per IngestWebhooks call (1: one IngestWebhook call each); "
        "default: the gateway's",
    )
    parser.add_argument(
        "--linger-ms", type=float, default=None, help="batch linger; default: the gateway's"
    )
    parser.add_argument(
        "--batch-calls",
        type=int,
        default=None,
        help="batch calls in flight; default: the gateway's",
    )
    parser.add_argument(
        "--process-linger-ms",
        type=float,
        default=None,
        help="the router's processing linger; default: the router's",
    )
    parser.add_argument("--repeat", type=int, default=2, help="rounds (bare then ingest)")
    args = parser.parse_args(args_list)
    result = run(args)
    print(table(result))
    print(f"<!-- {json.dumps(_summary(result))} -->")
    return result


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "rounds": [
            {
                k: {m: v[m] for m in ("per_second", "p50_ms", "p99_ms", "errors")}
                for k, v in x.items()
                if isinstance(v, dict) and "per_second" in v
            }
            for x in r["rounds"]
        ],
        "layout": r["layout"],
        "batching": r["batching"],
    }


if __name__ == "__main__":
    main()
