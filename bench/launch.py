"""The launch gate: the whole stack, started as ``make up`` starts it, under the
seed's scenario and at scale, beside the raw limits of this machine measured in the
same run on the same servers.

``python -m bench.launch`` (part of ``make bench``) starts the devstack on free ports
in a temporary folder (embedded PostgreSQL with fsync on, as ``make up`` runs it, the
Tansu broker, the sandbox and every service as its own process) and runs, in turn:

1. **Raw limits**: a bare aiohttp JSON handler, raw broker produce/consume and
   single-row PostgreSQL INSERT + commit (``bench.baseline``) on the stack's broker
   and database.
2. **The seed's scenario**: 50 concurrent users, each an API client with its own
   tenant and key (made by ``python -m postd_gateway create-tenants``), connect a
   Facebook account through OAuth, schedule 2 posts each (100), follow them to
   published through the API, then ask ``GET /v1/analytics``.
3. **Scale**: tenants with ten connections each across Facebook, Instagram, LinkedIn,
   TikTok, Business Profile and Mailchimp (seeded in bulk in the sandbox, every one
   connected through the real OAuth flow with the sandbox approving at once), then
   scheduled posts (one target each, on the platforms that take text) created through
   ``POST /v1/posts``: a steady share due evenly at a fixed rate, then the rest (the
   larger share) due within one and the same minute. Measured from the publisher's
   rows: published per second, due → published-and-recorded p50/p99; from the
   sandbox's post log: duplicates and lost jobs.
4. **Gateway p99**: authenticated ``GET /v1/connections`` at a fixed offered rate
   (open loop, latency from the scheduled time) over the tenants' keys, and the same
   loop against a bare handler (its own process) serving the same bytes.
5. **Webhook ingest**: TikTok-signed webhooks through the gateway to the router
   (``bench.webhooks``' load generator), and the same generator against a bare handler.
6. **Memory**: RSS of each service (PSS for PostgreSQL's processes) at rest, before
   any load, and its peak under load.

``BENCH_SCALE=small`` (default: 100 tenants, 1,000 connections, 5,000 posts) or
``full`` (1,000 tenants, 10,000 connections, 100,000 posts); ``BENCH_LAUNCH_TENANTS``,
``BENCH_LAUNCH_POSTS``, ``BENCH_LAUNCH_STEADY_RATE`` override. Writes
``bench/results/launch.md``, ``launch.png`` (throughput, latency and memory over
time) and ``launch.json``; prints the Markdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench import webhooks as webhook_bench
from bench.baseline import bare_aiohttp, raw_broker, raw_pg_writes
from bench.chart import Panel, Series, render
from bench.harness import (
    Fleet,
    Gateway,
    Member,
    MemorySampler,
    PublishLoad,
    Sandbox,
    build_fleet,
    due_spread,
    lags_ms,
    oauth_dance,
    open_stack,
    p,
)
from postd_common import db
from postd_common.devinfra import free_port, port_open
from postd_common.devstack.driver import StackProcess

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

SCALES: dict[str, dict[str, float]] = {
    "small": {"tenants": 100, "posts": 5_000, "steady_rate": 50, "burst_share": 0.6},
    "full": {"tenants": 1_000, "posts": 100_000, "steady_rate": 100, "burst_share": 0.6},
}
SEED_USERS = 50
SEED_POSTS_PER_USER = 2
GATEWAY_RATE = 1_000
GATEWAY_SECONDS = 10.0
WEBHOOK_SECONDS = 8.0
WEBHOOK_CONNECTIONS = 64


@dataclass
class Scale:
    name: str
    tenants: int
    posts: int
    steady_rate: float
    burst_share: float

    @classmethod
    def from_env(cls) -> Scale:
        name = os.environ.get("BENCH_SCALE", "small")
        if name not in SCALES:
            raise SystemExit(f"BENCH_SCALE must be one of {', '.join(SCALES)}")
        base = SCALES[name]
        return cls(
            name=name,
            tenants=int(os.environ.get("BENCH_LAUNCH_TENANTS", base["tenants"])),
            posts=int(os.environ.get("BENCH_LAUNCH_POSTS", base["posts"])),
            steady_rate=float(os.environ.get("BENCH_LAUNCH_STEADY_RATE", base["steady_rate"])),
            burst_share=base["burst_share"],
        )


@dataclass
class Timeline:
    """Wall-clock marks of the run, for the chart."""

    began: float = field(default_factory=time.time)
    marks: list[tuple[float, str]] = field(default_factory=list)
    windows: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def mark(self, what: str) -> None:
        self.marks.append((time.time() - self.began, what))

    def at(self, wall: float) -> float:
        return wall - self.began


# --------------------------------------------------------------------------- 1: raw limits


async def raw_limits(stack: StackProcess) -> dict[str, Any]:
    http = await bare_aiohttp(duration_s=4.0)
    writes = await raw_pg_writes(stack.database_url, count=4000)
    produced, consumed = await asyncio.to_thread(raw_broker, stack.kafka_bootstrap, 30_000)
    return {
        "bare_aiohttp_rps": http.per_second,
        "bare_aiohttp_p99_ms": http.p99_ms,
        "pg_writes_per_s": writes.per_second,
        "pg_write_p99_ms": writes.p99_ms,
        "broker_produce_per_s": produced,
        "broker_consume_per_s": consumed,
    }


# --------------------------------------------------------------------------- 2: seed scenario


async def seed_scenario(stack: StackProcess, http: aiohttp.ClientSession) -> dict[str, Any]:
    """50 users at once: connect Facebook, schedule 2 posts, see them published
    through the API, ask for analytics."""
    sandbox = Sandbox(stack.sandbox_url, http)
    gateway = Gateway(stack.gateway_url, http)
    tenants = await stack.create_tenants("seed", SEED_USERS)
    logins = (await sandbox.seed("meta", SEED_USERS, pages_per_user=2, instagram=False))["users"]
    lock = asyncio.Lock()
    load = PublishLoad(stack, http, run="seed")
    due = datetime.now(UTC) + timedelta(seconds=12)
    steps: dict[str, list[float]] = {"connect": [], "create": [], "seen published": []}
    analytics: Counter[str] = Counter()
    sample: list[str] = []
    began = time.perf_counter()

    async def user(i: int) -> None:
        tenant = tenants[i]
        t0 = time.perf_counter()
        await oauth_dance(http, stack, sandbox, tenant, "facebook", "meta", logins[i], lock)
        member = Member(tenant, connections=await gateway.connections(tenant))
        steps["connect"].append(time.perf_counter() - t0)
        jobs = load.plan(
            [member], SEED_POSTS_PER_USER, [due] * SEED_POSTS_PER_USER, platforms=("facebook",)
        )
        for job in jobs:
            t1 = time.perf_counter()
            await load.create(job)
            steps["create"].append(time.perf_counter() - t1)
        for job in jobs:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                got = await gateway.json("GET", f"/v1/jobs/{job.job_id}", tenant)
                if got.get("state") in ("published", "failed", "cancelled"):
                    steps["seen published"].append(time.time() - due.timestamp())
                    break
                await asyncio.sleep(0.5)
        async with http.get(stack.gateway_url + "/v1/analytics", headers=tenant.auth) as resp:
            analytics[str(resp.status)] += 1
            if resp.status == 200 and not sample:
                sample.append((await resp.text())[:300])

    await asyncio.gather(*(user(i) for i in range(SEED_USERS)))
    took = time.perf_counter() - began
    pool = await db.create_pool(stack.database_url, min_size=1, max_size=2)
    try:
        verdict = await load.verdict(pool, sandbox)
        rows = await load.rows(pool)
    finally:
        await pool.close()
    lags = lags_ms(rows, {j.job_id: j.accepted_at for j in load.jobs})
    available = any(s == "200" for s in analytics)
    return {
        "users": SEED_USERS,
        "posts": len(load.jobs),
        "published": verdict.published,
        "duplicates": verdict.duplicates,
        "lost": verdict.lost,
        "seconds": took,
        "connect_p50_ms": p(steps["connect"], 50) * 1000,
        "connect_p99_ms": p(steps["connect"], 99) * 1000,
        "create_p50_ms": p(steps["create"], 50) * 1000,
        "create_p99_ms": p(steps["create"], 99) * 1000,
        "lag_p50_ms": p(lags, 50),
        "lag_p99_ms": p(lags, 99),
        "analytics": "available" if available else "not available",
        "analytics_statuses": dict(analytics),
        "analytics_sample": sample[0] if sample else "",
    }


# --------------------------------------------------------------------------- 3: scale


async def scale_run(
    stack: StackProcess, http: aiohttp.ClientSession, scale: Scale, timeline: Timeline
) -> dict[str, Any]:
    began = time.perf_counter()
    fleet: Fleet = await build_fleet(stack, http, tenants=scale.tenants, slug="scale")
    timeline.mark("connected")
    load = PublishLoad(stack, http, run=f"sc{int(time.time())}")
    # Warm up (connections, caches), then learn the create rate on as many again: 1 %
    # of the posts each, due at once. The rest is due once all of it can be created.
    warm_count = max(50, scale.posts // 100)
    warm = load.plan(fleet.members, warm_count, [datetime.now(UTC)] * warm_count)
    await load.create_all(warm)
    calibration = load.plan(fleet.members, warm_count, [datetime.now(UTC)] * warm_count)
    create_rate = warm_count / await load.create_all(calibration)
    warm_count *= 2
    steady_count = round(scale.posts * (1 - scale.burst_share)) - warm_count
    burst_count = scale.posts - warm_count - steady_count
    steady_s = steady_count / scale.steady_rate
    lead = (scale.posts - warm_count) / create_rate * 1.1 + 15
    start = datetime.now(UTC) + timedelta(seconds=lead)
    # The burst: every one of them due at the top of the same minute, as people
    # schedule for 09:00 (the hardest case of "due in the same minute").
    burst_at = start + timedelta(seconds=steady_s + 20)
    burst_at += timedelta(seconds=(60 - burst_at.second) % 60, microseconds=-burst_at.microsecond)
    steady = load.plan(fleet.members, steady_count, due_spread(start, steady_count, steady_s))
    burst = load.plan(fleet.members, burst_count, [burst_at] * burst_count)
    timeline.mark("creating")
    created_s = await load.create_all([*steady, *burst])
    timeline.mark("created")
    late = sum(1 for j in [*steady, *burst] if j.accepted_at > j.due.timestamp())
    pool = await db.create_pool(stack.database_url, min_size=1, max_size=4)
    try:
        timeout = lead + steady_s + 80 + burst_count / 20 + 300
        settle_s = await load.settle(pool, timeout=timeout)
        verdict = await load.verdict(pool, Sandbox(stack.sandbox_url, http))
        rows = {str(r["id"]): r for r in await load.rows(pool)}
    finally:
        await pool.close()
    accepted = {j.job_id: j.accepted_at for j in load.jobs}

    def phase(jobs: Sequence[Any]) -> dict[str, Any]:
        mine = [rows[j.job_id] for j in jobs if j.job_id in rows]
        lags = lags_ms(mine, accepted)
        done = [r["finished_at"].timestamp() for r in mine if r["finished_at"] is not None]
        first_due = min((r["due_at"].timestamp() for r in mine), default=0.0)
        span = (max(done) - first_due) if done else 0.0
        return {
            "jobs": len(jobs),
            "published": sum(1 for r in mine if r["state"] == "PUBLISHED"),
            "throughput": len(done) / span if span > 0 else 0.0,
            "lag_p50_ms": p(lags, 50),
            "lag_p99_ms": p(lags, 99),
            "lag_max_ms": max(lags) if lags else 0.0,
            "retried": sum(1 for r in mine if r["attempt_count"] > 1),
        }

    finished = [
        (timeline.at(r["finished_at"].timestamp()), r) for r in rows.values() if r["finished_at"]
    ]
    return {
        "tenants": scale.tenants,
        "connections": fleet.connections,
        "by_platform": dict(fleet.by_platform()),
        "oauth_dances": fleet.dances,
        "connect_seconds": fleet.dance_seconds,
        "posts": scale.posts,
        "warm_up": warm_count,
        "create_rate": (len(load.jobs) - warm_count) / created_s,
        "create_p99_ms": p(load.create_latencies, 99) * 1000,
        "created_late": late,
        "create_errors": dict(load.create_errors),
        "steady_rate": scale.steady_rate,
        "steady": phase(steady),
        "burst": phase(burst),
        "verdict": {
            "published": verdict.published,
            "duplicates": verdict.duplicates,
            "lost": verdict.lost,
            "dlq": verdict.dlq,
            "stuck": verdict.stuck,
            "states": dict(verdict.states),
        },
        "settle_seconds": settle_s,
        "seconds": time.perf_counter() - began,
        "_finished": [
            (at, r["due_at"].timestamp(), accepted.get(str(r["id"]), 0.0))
            for at, r in finished
            if r["state"] == "PUBLISHED"
        ],
        "_accepted": [timeline.at(j.accepted_at) for j in load.jobs if j.job_id],
        "_members": fleet.members,
    }


# --------------------------------------------------------------------------- 4: gateway


async def open_loop(
    http: aiohttp.ClientSession,
    url: str,
    keys: Sequence[dict[str, str]],
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    """Requests scheduled every 1/rate s, turning over ``keys``; latency from the
    scheduled time, so a stall is not hidden by the generator waiting."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    total = int(rate * seconds)
    began = time.perf_counter() + 0.05

    async def one(i: int, scheduled: float) -> None:
        try:
            async with http.get(url, headers=keys[i % len(keys)]) as resp:
                await resp.read()
                statuses[str(resp.status)] += 1
        except aiohttp.ClientError as exc:
            statuses[type(exc).__name__] += 1
        latencies.append(time.perf_counter() - scheduled)

    tasks = []
    for i in range(total):
        scheduled = began + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    return {
        "offered_rps": rate,
        "achieved_rps": total / elapsed,
        "p50_ms": p(latencies, 50) * 1000,
        "p99_ms": p(latencies, 99) * 1000,
        "ok": statuses.get("200", 0),
        "errors": sum(n for s, n in statuses.items() if s != "200"),
    }


def serve_bare(port: int, body_file: Path) -> None:
    """``python -m bench.launch _bare PORT BODY``: GET /v1/connections answering the
    gateway's own bytes from memory, until SIGTERM."""
    body = body_file.read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/v1/connections", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


@contextlib.asynccontextmanager
async def bare_process(args: list[str], port: int) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    try:
        for _ in range(300):
            if port_open(port):
                break
            await asyncio.sleep(0.05)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()


async def closed_loop(
    http: aiohttp.ClientSession,
    url: str,
    keys: Sequence[dict[str, str]],
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    """``concurrency`` clients back to back: the most the server answers."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        nonlocal errors
        i = n
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            async with http.get(url, headers=keys[i % len(keys)]) as resp:
                await resp.read()
                errors += resp.status != 200
            latencies.append(time.perf_counter() - started)
            i += concurrency

    began = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return {
        "rps": len(latencies) / (time.perf_counter() - began),
        "p50_ms": p(latencies, 50) * 1000,
        "p99_ms": p(latencies, 99) * 1000,
        "errors": errors,
    }


async def gateway_p99(
    stack: StackProcess, http: aiohttp.ClientSession, members: Sequence[Member], work: Path
) -> dict[str, Any]:
    """Closed loop (capacity), then open loop at 1,000/s and at half the capacity,
    for the gateway (real connectors behind it) and for a bare handler."""
    keys = [m.tenant.auth for m in members[:50]]
    url = stack.gateway_url + "/v1/connections?limit=20"
    async with http.get(url, headers=keys[0]) as resp:
        body = await resp.read()
    body_file = work / "connections.json"
    body_file.write_bytes(body)
    out: dict[str, Any] = {"body_bytes": len(body), "keys": len(keys)}
    began = time.time()
    out["gateway_closed"] = await closed_loop(http, url, keys, 16, 6.0)
    out["window"] = (began, time.time())
    half = max(50.0, round(out["gateway_closed"]["rps"] / 2, -1))
    out["rates"] = sorted({float(GATEWAY_RATE), min(float(GATEWAY_RATE), half)})
    for rate in out["rates"]:
        out[f"gateway_open_{rate:.0f}"] = await open_loop(http, url, keys, rate, GATEWAY_SECONDS)
    port = free_port()
    bare_url = f"http://127.0.0.1:{port}/v1/connections"
    async with bare_process(["bench.launch", "_bare", str(port), str(body_file)], port):
        out["bare_closed"] = await closed_loop(http, bare_url, keys, 16, 6.0)
        for rate in out["rates"]:
            out[f"bare_open_{rate:.0f}"] = await open_loop(
                http, bare_url, keys, rate, GATEWAY_SECONDS
            )
    return out


# --------------------------------------------------------------------------- 5: webhooks


async def webhook_ingest(stack: StackProcess) -> dict[str, Any]:
    port = free_port()
    async with bare_process(["bench.webhooks", "_bare", "--port", str(port)], port):
        bare = await webhook_bench.drive(
            port,
            "/bare",
            seconds=WEBHOOK_SECONDS,
            connections=WEBHOOK_CONNECTIONS,
            rate=0,
            processes=2,
        )
    before = await webhook_bench._emitted(stack.database_url)
    began = time.perf_counter()
    ingest = await webhook_bench.drive(
        stack.port("gateway"),
        "/webhooks/tiktok",
        seconds=WEBHOOK_SECONDS,
        connections=WEBHOOK_CONNECTIONS,
        rate=0,
        processes=2,
    )
    ended = time.perf_counter()
    emitted = 0
    while time.perf_counter() - ended < 120:
        emitted = await webhook_bench._emitted(stack.database_url) - before
        if emitted >= ingest["ok"]:
            break
        await asyncio.sleep(0.2)
    return {
        "bare": bare,
        "ingest": ingest,
        "emitted": emitted,
        "emitted_per_second": emitted / (time.perf_counter() - began),
    }


# --------------------------------------------------------------------------- the run


async def run(scale: Scale) -> dict[str, Any]:
    result: dict[str, Any] = {
        "scale": scale.__dict__,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
    }
    timeline = Timeline()
    webhook_env = {"POSTD_TIKTOK_CLIENT_SECRET": webhook_bench.SECRET}
    async with (
        open_stack(webhook_env) as stack,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as http,
    ):
        result["stack_ready_seconds"] = stack.started_in
        memory = MemorySampler(stack)
        memory.start(timeline.began)
        await asyncio.sleep(5)  # at rest: started, connected, no traffic yet
        rest_until = time.time() - timeline.began
        timeline.mark("raw limits")
        result["raw"] = await raw_limits(stack)
        timeline.mark("seed scenario")
        load_from = time.time() - timeline.began
        result["seed"] = await seed_scenario(stack, http)
        timeline.mark("scale")
        result["scale_run"] = await scale_run(stack, http, scale, timeline)
        members = result["scale_run"].pop("_members")
        timeline.mark("gateway")
        result["gateway"] = await gateway_p99(stack, http, members, stack.state)
        g0, g1 = result["gateway"]["window"]
        timeline.windows["gateway GET /v1/connections (closed loop)"] = (
            timeline.at(g0),
            timeline.at(g1),
            result["gateway"]["gateway_closed"]["rps"],
        )
        timeline.mark("webhooks")
        w0 = time.time()
        result["webhooks"] = await webhook_ingest(stack)
        timeline.windows["webhooks in"] = (
            timeline.at(w0),
            timeline.at(time.time()),
            result["webhooks"]["ingest"]["per_second"],
        )
        await memory.stop()
        result["memory"] = {
            "rest": _median_by_part(memory.samples, 0.0, rest_until),
            "peak": memory.peak(since=load_from),
        }
        result["restarts"] = stack.pids().get("restarts", {})
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["_timeline"] = timeline
    result["_memory"] = memory.samples
    return result


def _median_by_part(
    samples: list[tuple[float, dict[str, float]]], since: float, until: float
) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for at, sample in samples:
        if since <= at <= until:
            for name, mb in sample.items():
                values.setdefault(name, []).append(mb)
    return {name: sorted(v)[len(v) // 2] for name, v in values.items() if v}


# --------------------------------------------------------------------------- report


def chart(result: dict[str, Any], path: Path) -> None:
    timeline: Timeline = result["_timeline"]
    scale = result["scale_run"]
    per_second: Counter[int] = Counter()
    lag_bins: dict[int, list[float]] = {}
    for at, due, accepted in scale["_finished"]:
        second = int(at)
        per_second[second] += 1
        lag_bins.setdefault(second, []).append((timeline.began + at - max(due, accepted)) * 1000)
    created: Counter[int] = Counter(int(at) for at in scale["_accepted"])
    span = range(
        min([*per_second, *created], default=0), max([*per_second, *created], default=0) + 1
    )
    panels = [
        Panel(
            "Publish throughput (scale run)",
            "jobs per second",
            [
                Series("published", [(s, per_second.get(s, 0)) for s in span]),
                Series("created (POST /v1/posts)", [(s, created.get(s, 0)) for s in span]),
            ],
            marks=[(at, what) for at, what in timeline.marks],
        ),
        Panel(
            "Due -> published and recorded, per second of publishing",
            "ms",
            [
                Series("p50", [(s, p(v, 50)) for s, v in sorted(lag_bins.items())], max_gap=3),
                Series("p99", [(s, p(v, 99)) for s, v in sorted(lag_bins.items())], max_gap=3),
            ],
        ),
        Panel(
            "Gateway and webhook load windows",
            "requests per second",
            [
                Series(name, [(a, rate), (b, rate)])
                for name, (a, b, rate) in timeline.windows.items()
            ],
        ),
        Panel(
            "Memory",
            "MB (RSS; PostgreSQL: PSS summed)",
            [
                Series(name, [(at, sample.get(name, math.nan)) for at, sample in result["_memory"]])
                for name in sorted({n for _, s in result["_memory"] for n in s})
            ],
        ),
    ]
    render(
        path,
        f"POSTD launch run, scale {result['scale']['name']}, {result['started']}",
        panels,
        x_label="seconds since the stack started",
        panel_height=260,
    )


def ratio(value: float, limit: float) -> str:
    return f"{value / limit:.3g}" if limit else "n/a"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _open_row(gw: dict[str, Any], rate: float) -> str:
    mine, bare = gw[f"gateway_open_{rate:.0f}"], gw[f"bare_open_{rate:.0f}"]
    return (
        f"| … p99 at {rate:,.0f}/s offered (open loop, latency from the scheduled time; "
        f"{gw['keys']} tenants' keys in turn) | {_ms(mine['p99_ms'])} (p50 "
        f"{_ms(mine['p50_ms'])}, {mine['achieved_rps']:,.0f}/s answered) | "
        f"{_ms(bare['p99_ms'])} | {ratio(mine['p99_ms'], bare['p99_ms'])} x the latency |"
    )


def report(result: dict[str, Any]) -> str:
    raw, seed, sc = result["raw"], result["seed"], result["scale_run"]
    gw, wh, mem = result["gateway"], result["webhooks"], result["memory"]
    steady, burst = sc["steady"], sc["burst"]
    scale = result["scale"]
    lines = [
        "## Launch gate: the whole stack (`make up`), seed scenario and scale",
        "",
        f"Scale **{scale['name']}** ({scale['tenants']:,} tenants, {scale['posts']:,} posts; "
        "`BENCH_SCALE=full` for 1,000 tenants, 10,000 connections, 100,000 posts). "
        f"Run {result['started']} on {result['cores']} cores; load average before "
        f"{result['loadavg_before']}, after {result['loadavg_after']} (other work shares "
        f"these cores). Stack ready in {result['stack_ready_seconds']:.1f} s; PostgreSQL "
        "durable (fsync on), as `make up` runs it.",
        "",
        "### Raw limits, measured in this run on the stack's own servers",
        "",
        "| yardstick | rate | p99 |",
        "|---|---|---|",
        f"| bare aiohttp JSON handler (32 concurrent, in-process) | "
        f"{raw['bare_aiohttp_rps']:,.0f}/s | {_ms(raw['bare_aiohttp_p99_ms'])} |",
        f"| PostgreSQL single-row INSERT + commit (16 concurrent) | "
        f"{raw['pg_writes_per_s']:,.0f}/s | {_ms(raw['pg_write_p99_ms'])} |",
        f"| broker produce (300 B, acks=all) | {raw['broker_produce_per_s']:,.0f}/s | |",
        f"| broker consume (one consumer) | {raw['broker_consume_per_s']:,.0f}/s | |",
        "",
        "### The seed's scenario",
        "",
        "| users | posts | published | duplicates | lost | connect p50 / p99 | "
        "create p50 / p99 | due → published p50 / p99 | analytics | took |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {seed['users']} concurrent, own tenant and key each | {seed['posts']} | "
        f"{seed['published']} | {seed['duplicates']} | {seed['lost']} | "
        f"{_ms(seed['connect_p50_ms'])} / {_ms(seed['connect_p99_ms'])} | "
        f"{_ms(seed['create_p50_ms'])} / {_ms(seed['create_p99_ms'])} | "
        f"{_ms(seed['lag_p50_ms'])} / {_ms(seed['lag_p99_ms'])} | "
        f"{seed['analytics']} (`GET /v1/analytics`: {seed['analytics_statuses']}) | "
        f"{seed['seconds']:.0f} s |",
        "",
        "Each user: connect a Facebook account (OAuth through the gateway), list its "
        "connections, schedule 2 posts (all 100 due at the same second), poll "
        "`GET /v1/jobs/{id}` until published, then `GET /v1/analytics` (figures arrive "
        "on the collection schedule after publishing; first answer: "
        f"`{seed.get('analytics_sample', '')[:160]}`).",
        "",
        "### Scale",
        "",
        f"{sc['tenants']:,} tenants; {sc['connections']:,} connections "
        f"({', '.join(f'{k} {v:,}' for k, v in sorted(sc['by_platform'].items()))}), every one "
        f"through the real OAuth flow ({sc['oauth_dances']:,} consent round trips through the "
        f"gateway, connectors and vault in {sc['connect_seconds']:.0f} s). {sc['posts']:,} "
        f"scheduled posts, one target each on Facebook Pages and LinkedIn, created "
        f"through `POST /v1/posts` at {sc['create_rate']:,.0f}/s (p99 "
        f"{_ms(sc['create_p99_ms'])}; {sc['created_late']} accepted after their due time, "
        f"their latency counted from acceptance). The first {sc['warm_up']:,} posts warm up and "
        "measure the create rate, due at once; the phases below are the rest.",
        "",
        "| phase | jobs | published | throughput | vs raw PG writes | vs raw produce | "
        "due → published p50 | p99 | max | retried |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, ph in (
        (f"steady: due evenly at {sc['steady_rate']:.0f}/s", steady),
        ("burst: all due at the top of the same minute (drain)", burst),
    ):
        lines.append(
            f"| {label} | {ph['jobs']:,} | {ph['published']:,} | {ph['throughput']:,.0f}/s | "
            f"{ratio(ph['throughput'], raw['pg_writes_per_s'])} | "
            f"{ratio(ph['throughput'], raw['broker_produce_per_s'])} | "
            f"{_ms(ph['lag_p50_ms'])} | {_ms(ph['lag_p99_ms'])} | {_ms(ph['lag_max_ms'])} | "
            f"{ph['retried']} |"
        )
    v = sc["verdict"]
    lines += [
        "",
        f"Every job: {v['published']:,} published, **{v['duplicates']} duplicates, "
        f"{v['lost']} lost**, {v['dlq']} in the DLQ, {v['stuck']} stuck (states "
        f"{v['states']}); counted by each post's unique marker on the sandbox's post log.",
        "",
        "### Gateway and webhooks",
        "",
        "| measure | POSTD | bare aiohttp (same generator, same run) | ratio |",
        "|---|---|---|---|",
        f"| `GET /v1/connections` (page of 20; connectors and PostgreSQL behind), "
        f"16 clients back to back | {gw['gateway_closed']['rps']:,.0f}/s, p99 "
        f"{_ms(gw['gateway_closed']['p99_ms'])} | {gw['bare_closed']['rps']:,.0f}/s, p99 "
        f"{_ms(gw['bare_closed']['p99_ms'])} | "
        f"{ratio(gw['gateway_closed']['rps'], gw['bare_closed']['rps'])} of the rate |",
        *(_open_row(gw, rate) for rate in gw["rates"]),
        f"| signed TikTok webhooks in through the gateway, {WEBHOOK_CONNECTIONS} connections "
        f"(verified, stored, acknowledged) | {wh['ingest']['per_second']:,.0f}/s, p99 "
        f"{_ms(wh['ingest']['p99_ms'])} | {wh['bare']['per_second']:,.0f}/s, p99 "
        f"{_ms(wh['bare']['p99_ms'])} | "
        f"{ratio(wh['ingest']['per_second'], wh['bare']['per_second'])} |",
        f"| … emitted on `webhook.events` | {wh['emitted']:,} of {wh['ingest']['ok']:,} accepted "
        f"({wh['emitted_per_second']:,.0f}/s including the drain) | | |",
        "",
        "### Memory per service",
        "",
        "| part | at rest | peak under load |",
        "|---|---|---|",
    ]
    restarted = {name: n for name, n in result["restarts"].items() if n}
    for name in sorted(set(mem["rest"]) | set(mem["peak"])):
        lines.append(
            f"| {name} | {mem['rest'].get(name, 0):,.0f} MB | {mem['peak'].get(name, 0):,.0f} MB |"
        )
    lines += [
        "",
        "RSS of each process; PostgreSQL as the sum of its processes' proportional set sizes. "
        f"Services restarted during the run: {restarted or 'none'}.",
        "",
        "![throughput, latency and memory over time](launch.png)",
    ]
    return "\n".join(lines)


def main() -> dict[str, Any]:
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        serve_bare(int(sys.argv[2]), Path(sys.argv[3]))
        return {}
    scale = Scale.from_env()
    result = asyncio.run(run(scale))
    RESULTS.mkdir(parents=True, exist_ok=True)
    chart(result, RESULTS / "launch.png")
    text = report(result)
    (RESULTS / "launch.md").write_text(text + "\n")
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    public["scale_run"] = {k: v for k, v in result["scale_run"].items() if not k.startswith("_")}
    (RESULTS / "launch.json").write_text(json.dumps(public, indent=1, default=str))
    print(text)
    print()
    print(f"<!-- {json.dumps(public, default=str)} -->")
    return public


if __name__ == "__main__":
    main()
