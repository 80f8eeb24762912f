"""``make chaos``: faults while a publish load runs against the whole stack.

``python -m bench.chaos`` starts the stack as ``make up`` does (devstack on free ports,
a temporary folder), connects a few tenants' Facebook Pages and LinkedIn accounts
through OAuth, and then, scenario after scenario, creates posts through
``POST /v1/posts`` at a steady rate (each due two seconds after it is sent, each with
a unique marker in its text, a create that fails is sent again with the same
``Idempotency-Key``) while one fault happens:

* SIGKILL of each service in turn (the devstack restarts it);
* the broker restarted **empty** (devstack SIGUSR1: same port, topics re-created);
* PostgreSQL restarted (devstack SIGUSR2);
* sandbox faults: 10 % of platform calls answer 5xx; bursts of 429 with Retry-After;
  calls that hang past the client's timeout; responses lost after the post was made;
  a Page's token revoked mid-run (its jobs pause, the connection shows revoked with an
  alert, the tenant reconnects through OAuth and publishes the missed jobs).

After each scenario every job must have ended published exactly once on the sandbox
(counted by its marker in the sandbox's own post log) or in the DLQ with a reason:
none lost, none duplicated, none stuck; ``/healthz`` answers ok; connection statuses
and alerts are the expected ones. The table: scenario, jobs, published, duplicates,
lost, DLQ, recovery time (from the fault's end until every job due by then had
ended). Exit status 1 when any scenario breaks a guarantee.

``--jobs N`` per scenario (300), ``--rate R`` creates per second (20), ``--only a,b``.
Configuration is the default one except that connectors gives a platform call 3 s
(so the ``timeout`` fault hangs past it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg

from bench.harness import (
    Gateway,
    Member,
    PublishLoad,
    Sandbox,
    Verdict,
    build_fleet,
    oauth_dance,
    open_stack,
)
from postd_common import db
from postd_common.devstack.driver import SERVICES, StackProcess

# Faults hang a platform call past connectors' timeout; everything else is default.
CHAOS_ENV: Mapping[str, str] = {"POSTD_CONNECTORS_HTTP_TIMEOUT": "3"}
DANCES = (("facebook", "meta", "users"), ("linkedin", "linkedin", "members"))
# LinkedIn allows a member 150 posts a day (member and organisation posts alike): a
# run stays under 120 per member, or it would measure that limit (correctly deferred
# by an hour), not the faults. The rest goes to Facebook Pages.
LINKEDIN_PER_MEMBER = 120


def publish_platforms(total_jobs: int, tenants: int) -> tuple[str, ...]:
    """One job in ``n`` to LinkedIn, the others to Facebook, ``n`` at least 5."""
    every = max(5, -(-total_jobs // (LINKEDIN_PER_MEMBER * tenants)))
    return ("facebook",) * (every - 1) + ("linkedin",)


@dataclass
class Context:
    stack: StackProcess
    http: aiohttp.ClientSession
    pool: asyncpg.Pool
    members: list[Member]
    sandbox: Sandbox
    gateway: Gateway
    notes: list[str] = field(default_factory=list)
    # Per scenario: what the checks after it expect.
    expect_revoked: str = ""


Inject = Callable[[Context], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str
    inject: Inject


@dataclass
class Outcome:
    scenario: Scenario
    verdict: Verdict
    fault_seconds: float
    recovery_seconds: float
    checks: list[str]  # problems found by the checks after the scenario

    @property
    def ok(self) -> bool:
        return self.verdict.clean and not self.checks


# --------------------------------------------------------------------------- faults


def kill(service: str) -> Scenario:
    async def inject(ctx: Context) -> None:
        back = await ctx.stack.kill_service(service)
        ctx.notes.append(f"{service} killed, answering again after {back:.1f}s")

    return Scenario(f"kill {service}", f"SIGKILL {service}; the devstack restarts it", inject)


def restart(what: str) -> Scenario:
    async def inject(ctx: Context) -> None:
        back = await ctx.stack.restart_infra(what)
        ctx.notes.append(f"{what} back after {back:.1f}s")

    label = "broker restarted empty" if what == "broker" else "PostgreSQL restarted"
    return Scenario(label, label, inject)


async def _faulted(ctx: Context, seconds: float, **fault: Any) -> None:
    """Aim ``fault`` at both publishing platforms for ``seconds``, then clear it."""
    for platform in ("meta", "linkedin"):
        await ctx.sandbox.fault(platform=platform, **fault)
    await asyncio.sleep(seconds)
    await ctx.sandbox.clear_faults()


def sandbox_fault(name: str, what: str, seconds: float, **fault: Any) -> Scenario:
    async def inject(ctx: Context) -> None:
        await _faulted(ctx, seconds, **fault)

    return Scenario(name, what, inject)


def rate_limit_bursts(seconds: float) -> Scenario:
    async def inject(ctx: Context) -> None:
        for _ in range(3):
            for platform in ("meta", "linkedin"):
                await ctx.sandbox.fault(
                    platform=platform, kind="rate_limit", times=8, retry_after=2
                )
            await asyncio.sleep(seconds / 3)
        await ctx.sandbox.clear_faults()

    return Scenario(
        "429 bursts",
        "three bursts of 8 rate-limit answers per platform, Retry-After 2 s",
        inject,
    )


def token_revoked() -> Scenario:
    async def inject(ctx: Context) -> None:
        member = ctx.members[0]
        page = next(c for c in member.connections if c["platform"] == "facebook")
        revoked = await ctx.sandbox.revoke("meta", page["external_id"])
        ctx.expect_revoked = page["id"]
        ctx.notes.append(f"revoked {revoked} token(s) of page {page['external_id']}")
        # The connection shows it (a publish met the revoked token) and an alert says so.
        status = await _wait_status(ctx, member, page["id"], {"revoked", "attention"}, 60)
        alerts: list[str] = []
        deadline = time.monotonic() + 30  # health raises it from connection.events
        while not alerts and time.monotonic() < deadline:
            alerts = await _alerts_for(ctx, member, page["id"])
            await asyncio.sleep(0.5)
        ctx.notes.append(f"connection {status}; alerts {alerts}")
        if status not in ("revoked", "attention"):
            raise AssertionError(f"connection stayed {status} after its token was revoked")
        if not alerts:
            raise AssertionError("no alert for the revoked connection")
        await asyncio.sleep(3)  # more of its jobs fall due while it is paused
        await oauth_dance(
            ctx.http,
            ctx.stack,
            ctx.sandbox,
            member.tenant,
            "facebook",
            "meta",
            member.accounts["meta"],
            asyncio.Lock(),
            reconnect=page["id"],
        )
        status = await _wait_status(ctx, member, page["id"], {"healthy"}, 30)
        # The publisher resumes the connection when it hears connection.events; until
        # then a backfill is refused as "still paused" (409), and the client tries again.
        deadline = time.monotonic() + 60
        url = f"{ctx.stack.gateway_url}/v1/connections/{page['id']}/backfill"
        while True:
            async with ctx.http.post(
                url, json={"action": "publish"}, headers=member.tenant.auth
            ) as resp:
                answer = await resp.text()
                if resp.status != 409 or time.monotonic() > deadline:
                    break
            await asyncio.sleep(0.5)
        if resp.status != 200:
            raise AssertionError(f"backfill refused: {resp.status} {answer[:300]}")
        deadline = time.monotonic() + 30  # the alert resolves once health hears of it
        while any(a.endswith(":firing") for a in alerts) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            alerts = await _alerts_for(ctx, member, page["id"])
        if any(a.endswith(":firing") for a in alerts):
            raise AssertionError(f"the alert stayed open after the reconnect: {alerts}")
        ctx.notes.append(f"reconnected ({status}); backfill {answer[:200]}; alerts {alerts}")

    return Scenario(
        "token revoked",
        "a Page's tokens revoked mid-run; reconnect through OAuth, then backfill",
        inject,
    )


async def _wait_status(
    ctx: Context, member: Member, connection_id: str, wanted: set[str], seconds: float
) -> str:
    status = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = await ctx.gateway.json("GET", f"/v1/connections/{connection_id}", member.tenant)
        status = str(got.get("status", ""))
        if status in wanted:
            return status
        await asyncio.sleep(0.5)
    return status


async def _alerts_for(ctx: Context, member: Member, connection_id: str) -> list[str]:
    page = await ctx.gateway.json("GET", "/v1/alerts?limit=100", member.tenant)
    return [
        f"{a.get('kind')}:{a.get('state')}"
        for a in page["items"]
        if a.get("connection_id") == connection_id
    ]


def scenarios(fault_seconds: float) -> list[Scenario]:
    return [
        *(kill(s) for s in SERVICES),
        restart("broker"),
        restart("postgres"),
        sandbox_fault(
            "10 % 5xx",
            "10 % of platform calls answer 5xx",
            fault_seconds,
            kind="server_error",
            times=-1,
            probability=0.1,
        ),
        rate_limit_bursts(fault_seconds),
        sandbox_fault(
            "timeouts",
            "6 platform calls per platform hang 5 s (connectors gives up at 3 s)",
            fault_seconds,
            kind="timeout",
            times=6,
            delay_ms=5000,
        ),
        sandbox_fault(
            "lost responses",
            "8 posts per platform made, then the connection dropped before the answer",
            fault_seconds,
            kind="lost_response",
            times=8,
        ),
        token_revoked(),
    ]


# --------------------------------------------------------------------------- running


async def run_scenario(
    ctx: Context,
    scenario: Scenario,
    *,
    jobs: int,
    rate: float,
    settle_timeout: float,
    platforms: tuple[str, ...] = ("facebook",),
) -> Outcome:
    ctx.expect_revoked = ""
    ctx.notes = []
    load = PublishLoad(ctx.stack, ctx.http, run=f"ch{uuid.uuid4().hex[:8]}")
    planned = load.plan(ctx.members, jobs, [datetime.now(UTC)] * jobs, platforms=platforms)
    creating = asyncio.create_task(load.create_paced(planned, rate, lead=2.0))
    await asyncio.sleep(jobs / rate / 3)
    fault_began = time.time()
    problems: list[str] = []
    try:
        await scenario.inject(ctx)
    except (AssertionError, RuntimeError) as exc:
        problems.append(f"during the fault: {exc}")
    fault_ended = time.time()
    await creating
    await load.settle(ctx.pool, timeout=settle_timeout)
    verdict = await load.verdict(ctx.pool, ctx.sandbox)
    rows = await load.rows(ctx.pool)
    due_by_end = [r for r in rows if r["due_at"].timestamp() <= fault_ended]
    finished = [r["finished_at"].timestamp() for r in due_by_end if r["finished_at"]]
    recovery = max(0.0, max(finished, default=fault_ended) - fault_ended)
    if len(finished) < len(due_by_end):
        recovery = float("inf")
    problems += await checks(ctx)
    return Outcome(scenario, verdict, fault_ended - fault_began, recovery, problems)


async def checks(ctx: Context) -> list[str]:
    """``/healthz`` ok; every connection healthy (the revoked one reconnected)."""
    problems = []
    deadline = time.monotonic() + 60
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, ValueError):
            async with ctx.http.get(ctx.stack.gateway_url + "/healthz") as resp:
                health = await resp.json()
                if resp.status == 200:
                    break
        await asyncio.sleep(1)
    else:
        problems.append(f"/healthz not ok: {health}")
    for member in ctx.members:
        for connection in await ctx.gateway.connections(member.tenant):
            if connection["status"] != "healthy":
                problems.append(f"connection {connection['id']} is {connection['status']}")
    return problems


@contextlib.asynccontextmanager
async def chaos_context(
    extra_env: Mapping[str, str] | None = None,
    *,
    tenants: int = 8,
    dances: Sequence[tuple[str, str, str]] = DANCES,
    keep: bool = False,
) -> Any:
    """A stack, its tenants connected (``dances``: which platforms, through OAuth), a
    pool on its database."""
    async with (
        open_stack({**CHAOS_ENV, **(extra_env or {})}, keep=keep) as stack,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as http,
    ):
        fleet = await build_fleet(stack, http, tenants=tenants, slug="chaos", dances=dances)
        pool = await db.create_pool(stack.database_url, min_size=1, max_size=4)
        try:
            yield Context(
                stack=stack,
                http=http,
                pool=pool,
                members=fleet.members,
                sandbox=Sandbox(stack.sandbox_url, http),
                gateway=Gateway(stack.gateway_url, http),
            )
        finally:
            await pool.close()


def table(outcomes: Sequence[Outcome]) -> str:
    lines = [
        "| scenario | jobs | published | duplicates | lost | DLQ | stuck | fault lasted | "
        "recovery | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        v = o.verdict
        recovery = "never" if o.recovery_seconds == float("inf") else f"{o.recovery_seconds:.1f} s"
        lines.append(
            f"| {o.scenario.name} | {v.jobs} | {v.published} | {v.duplicates} | {v.lost} | "
            f"{v.dlq} | {v.stuck} | {o.fault_seconds:.1f} s | {recovery} | "
            f"{'ok' if o.ok else 'FAILED'} |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    import os

    only = {s.strip() for s in args.only.split(",") if s.strip()}
    chosen = [s for s in scenarios(args.jobs / args.rate / 2) if not only or s.name in only]
    outcomes: list[Outcome] = []
    started = datetime.now(UTC)
    load_before = os.getloadavg()
    tenants = 8
    platforms = publish_platforms(args.jobs * len(chosen), tenants)
    async with chaos_context(tenants=tenants) as ctx:
        for scenario in chosen:
            print(f"==> {scenario.name}: {scenario.what}", flush=True)
            outcome = await run_scenario(
                ctx,
                scenario,
                jobs=args.jobs,
                rate=args.rate,
                settle_timeout=args.settle,
                platforms=platforms,
            )
            outcomes.append(outcome)
            v = outcome.verdict
            print(
                f"    jobs {v.jobs}, published {v.published}, duplicates {v.duplicates}, "
                f"lost {v.lost}, DLQ {v.dlq}, stuck {v.stuck}, states {dict(v.states)}; "
                f"{'; '.join(ctx.notes)}",
                flush=True,
            )
            for problem in outcome.checks:
                print(f"    PROBLEM: {problem}", flush=True)
        restarts = ctx.stack.pids().get("restarts", {})
    print()
    print(f"## Chaos run ({started:%Y-%m-%d %H:%M} UTC)")
    print()
    print(
        f"{args.jobs} jobs per scenario created at {args.rate:.0f}/s through the gateway "
        f"({tenants} tenants; {platforms.count('linkedin')} job in {len(platforms)} to "
        "LinkedIn, the others to Facebook Pages), each due 2 s after it was sent; load "
        f"average before {load_before}, after "
        f"{os.getloadavg()}; restarts seen by the devstack {restarts}."
    )
    print()
    print(table(outcomes))
    summary = [
        {
            "scenario": o.scenario.name,
            "jobs": o.verdict.jobs,
            "published": o.verdict.published,
            "duplicates": o.verdict.duplicates,
            "lost": o.verdict.lost,
            "dlq": o.verdict.dlq,
            "stuck": o.verdict.stuck,
            "recovery_s": o.recovery_seconds,
            "problems": o.checks,
        }
        for o in outcomes
    ]
    print()
    print(f"<!-- {json.dumps(summary)} -->")
    return 0 if all(o.ok for o in outcomes) else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--settle", type=float, default=300.0, help="seconds to wait for ends")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
