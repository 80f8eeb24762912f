"""The chaos run, small: one whole stack as ``make up`` runs it, a few hundred posts
published through the gateway while one fault of each kind happens, then the
guarantees checked: every job published exactly once on the sandbox or dead-lettered
with a reason, none lost, none stuck; the revoked connection shows it, alerts, comes
back through OAuth and publishes what it missed. The same run's every log line and
every exported span are then searched for secrets (platform tokens, API keys, app
secrets). ``make chaos`` is the full version (bench/chaos.py).

Faults, during one load: SIGKILL of the publisher, connectors, vault and gateway
(the devstack restarts them); the broker restarted empty; PostgreSQL restarted; on
the platforms 10 % of calls answering 5xx, a burst of 429 with Retry-After, calls
hanging past connectors' timeout, responses lost after the post was made. Then a
Page's token revoked mid-run. Correctness assertions only: no timing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bench.chaos import Context, chaos_context, checks, run_scenario, token_revoked
from bench.harness import DANCES, PublishLoad, Verdict
from postd_common.devinfra import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

JOBS = 300
RATE = 20.0
KILLED = ("publisher", "connectors", "vault", "gateway")
FAST_ENV = {
    # Shorter leases than production's, so a job held by a killed worker comes back
    # within the test's patience; the behaviour is the same.
    "POSTD_PUBLISH_TIMEOUT_SECONDS": "6",
    "POSTD_PUBLISH_LEASE_SECONDS": "10",
    "POSTD_DISPATCH_LEASE_SECONDS": "5",
    "POSTD_SANDBOX_REVEAL_TOKENS": "1",
    "OTEL_BSP_SCHEDULE_DELAY": "500",
}
# Token formats the sandbox issues (as the real platforms do), and POSTD's API keys.
TOKEN_PATTERNS = {
    "meta token": re.compile(r"EAAG[A-Za-z0-9_-]{16,}"),
    "linkedin token": re.compile(r"AQ[VX][A-Za-z0-9_-]{16,}"),
    "tiktok token": re.compile(r"\b(?:act|rft)\.[A-Za-z0-9_-]{16,}"),
    "google access token": re.compile(r"ya29\.a0[A-Za-z0-9_-]{10,}"),
    "google refresh token": re.compile(r"1//0g[A-Za-z0-9_-]{10,}"),
    "slack token": re.compile(r"xoxb-[A-Za-z0-9-]{10,}"),
    "postd api key": re.compile(r"postd_(?:dev|live)_[a-z0-9]{12}_[A-Za-z0-9_-]{16,}"),
    "bearer credential": re.compile(r"Bearer\s+[A-Za-z0-9._~+/-]{16,}"),
}


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: every service exports its spans here."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[tuple[str, str, Any]]:
        """(service, span name, span) of everything received."""
        found = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        found.append((service, span.name, span))
        return found


def span_texts(span: Any) -> list[str]:
    """Everything a span says: name, status, attributes, events, links."""
    texts = [span.name, span.status.message]
    for attribute in span.attributes:
        texts += [attribute.key, str(attribute.value)]
    for event in span.events:
        texts.append(event.name)
        texts += [f"{a.key}={a.value}" for a in event.attributes]
    for link in span.links:
        texts += [f"{a.key}={a.value}" for a in link.attributes]
    return texts


@dataclass
class Run:
    load: Verdict
    revoked: Verdict
    revoked_problems: list[str]
    notes: list[str]
    problems: list[str]
    pids: dict[str, Any]
    fault_hits: dict[str, int]
    logs: str
    spans: list[tuple[str, str, Any]]
    secrets: dict[str, str] = field(default_factory=dict)


async def faults_during(ctx: Context, notes: list[str]) -> None:
    """Every kind of fault while the load runs."""
    for platform in ("meta", "linkedin"):
        await ctx.sandbox.fault(platform=platform, kind="server_error", times=-1, probability=0.1)
        await ctx.sandbox.fault(platform=platform, kind="rate_limit", times=4, retry_after=1)
        await ctx.sandbox.fault(platform=platform, kind="timeout", times=2, delay_ms=4000)
        await ctx.sandbox.fault(platform=platform, kind="lost_response", times=3)
    await asyncio.sleep(2)
    for service in KILLED:
        back = await ctx.stack.kill_service(service)
        notes.append(f"{service} killed, back in {back:.1f}s")
    notes.append(f"broker back empty in {await ctx.stack.restart_infra('broker'):.1f}s")
    notes.append(f"postgres back in {await ctx.stack.restart_infra('postgres'):.1f}s")


@pytest.fixture(scope="module")
async def run() -> AsyncIterator[Run]:
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    env = {**FAST_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
    state: Path | None = None
    try:
        async with chaos_context(env, tenants=2, dances=DANCES, keep=True) as ctx:
            state = ctx.stack.state
            notes: list[str] = []
            load = PublishLoad(ctx.stack, ctx.http, run=f"fast{uuid.uuid4().hex[:6]}")
            planned = load.plan(
                ctx.members,
                JOBS,
                [datetime.now(UTC)] * JOBS,
                platforms=("facebook", "facebook", "facebook", "linkedin"),
            )
            creating = asyncio.create_task(load.create_paced(planned, RATE, lead=1.5))
            await faults_during(ctx, notes)
            await creating
            await ctx.sandbox.clear_faults()
            await load.settle(ctx.pool, timeout=150)
            verdict = await load.verdict(ctx.pool, ctx.sandbox)
            problems = await checks(ctx)
            revoked = await run_scenario(
                ctx, token_revoked(), jobs=40, rate=RATE, settle_timeout=120
            )
            notes += ctx.notes
            tokens = await ctx.sandbox._call("GET", "/_sandbox/tokens?reveal=1")
            secrets = {
                f"{t['platform']} {t['kind']} token {i}": t["value"]
                for i, t in enumerate(tokens["tokens"])
            }
            for member in ctx.members:
                secrets[f"api key of {member.tenant.slug}"] = member.tenant.api_key
            secrets["dev api key"] = ctx.stack.dev_api_key()
            stored = json.loads((state / "dev-secrets.json").read_text())
            for name, value in stored.items():
                if "SECRET" in name or "TOKEN" in name:
                    secrets[name] = value
            pids = ctx.stack.pids()
        # The stack is stopped: every service flushed its spans and wrote its last line.
        logs = "\n".join(
            (state / name).read_text(errors="replace")
            for name in ("stack.log", "postgres.log", "broker.log")
            if (state / name).exists()
        )
        # The sandbox logs each fault it applies: "fault fault_3 (rate_limit) on ...".
        hits: dict[str, int] = {}
        for kind in re.findall(r"fault fault_\d+ \((\w+)\)", logs):
            hits[kind] = hits.get(kind, 0) + 1
        # `make up` prints the dev tenant's key in its banner on purpose, for the
        # developer at the terminal; everything else must never show a secret.
        logs = re.sub(r"═{20,}.*?═{20,}", "[banner]", logs, flags=re.DOTALL)
        yield Run(
            load=verdict,
            revoked=revoked.verdict,
            revoked_problems=revoked.checks,
            notes=notes,
            problems=problems,
            pids=pids,
            fault_hits=hits,
            logs=logs,
            spans=collector.spans(),
            secrets=secrets,
        )
    except BaseException:
        # What the stack said last, beside the failure (the folder is removed below).
        if state is not None and (state / "stack.log").exists():
            tail = (state / "stack.log").read_text(errors="replace").splitlines()[-80:]
            print("--- the stack's last lines\n" + "\n".join(tail), flush=True)
        raise
    finally:
        await server.stop(0)
        if state is not None:
            shutil.rmtree(state.parent, ignore_errors=True)


def every_job_is_published_once_or_dead_lettered(run: Run) -> None:
    for verdict in (run.load, run.revoked):
        assert verdict.jobs > 0
        assert verdict.not_accepted == 0, verdict
        assert verdict.duplicates == 0, verdict
        assert verdict.lost == 0, verdict
        assert verdict.stuck == 0, verdict
        assert verdict.dlq_without_reason == 0, verdict
        assert verdict.published_not_on_platform == 0, verdict
        assert verdict.on_platform_not_published == 0, verdict
        assert verdict.published + verdict.dlq == verdict.jobs, verdict


def every_fault_happened(run: Run) -> None:
    restarts = run.pids["restarts"]
    for service in KILLED:
        assert restarts[service] >= 1, (service, restarts)
    assert run.pids["infra_restarts"] == {"broker": 1, "postgres": 1}
    for kind in ("server_error", "rate_limit", "timeout", "lost_response"):
        assert run.fault_hits.get(kind, 0) > 0, (kind, run.fault_hits)


def statuses_and_alerts_follow_the_revoked_token(run: Run) -> None:
    assert run.problems == []
    assert run.revoked_problems == []
    said = " ".join(run.notes)
    assert "connection revoked" in said
    assert "connection_attention:firing" in said
    assert "connection_attention:resolved" in said
    assert "reconnected (healthy)" in said


def no_secret_in_any_log_line(run: Run) -> None:
    assert run.logs.count("\n") > 200  # the whole run was captured
    assert any("platform token" in k or "token" in k for k in run.secrets)
    leaks = sorted(
        {name for name, value in run.secrets.items() if value and value in run.logs}
        | {
            name
            for name, value in run.secrets.items()
            if len(value) > 24 and value[:20] in run.logs
        }
    )
    assert not leaks, leaks
    matches = {
        name: sorted(set(pattern.findall(run.logs)))[:3]
        for name, pattern in TOKEN_PATTERNS.items()
        if pattern.search(run.logs)
    }
    assert not matches, matches


def no_secret_in_any_span(run: Run) -> None:
    services = {service for service, _, _ in run.spans}
    assert {"postd-gateway", "postd-publisher", "postd-connectors", "postd-vault"} <= services
    leaks = []
    for service, name, span in run.spans:
        for text in span_texts(span):
            for label, value in run.secrets.items():
                if value and value in text:
                    leaks.append((service, name, label))
            for label, pattern in TOKEN_PATTERNS.items():
                if pattern.search(text):
                    leaks.append((service, name, label))
    assert not leaks, leaks[:20]


CHECKS = (
    every_job_is_published_once_or_dead_lettered,
    every_fault_happened,
    statuses_and_alerts_follow_the_revoked_token,
    no_secret_in_any_log_line,
    no_secret_in_any_span,
)


def test_faults_of_every_kind_lose_nothing_duplicate_nothing_leak_nothing(
    run: Run, subtests: pytest.Subtests
) -> None:
    """One test over the one run (so a run of the suite on several workers makes the
    stack once), each guarantee reported on its own."""
    for check in CHECKS:
        with subtests.test(check.__name__.replace("_", " ")):
            check(run)
