"""Per-tenant rate limits hold across two gateway processes sharing PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from postd_common.devinfra import free_port
from postd_gateway.adapters.postgres import TenantStore

pytestmark = pytest.mark.integration

LIMIT = 12


async def _start_gateway(env: dict[str, str], log: Path) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    child_env = {
        **os.environ,
        **env,
        "POSTD_GATEWAY_PORT": str(port),
        "POSTD_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
        # A day-long window: the test cannot straddle two windows but by a freak.
        "POSTD_GATEWAY_RATE_WINDOW": "86400",
    }
    handle = log.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "postd_gateway", env=child_env, stdout=handle, stderr=handle
    )
    handle.close()
    return process, f"http://127.0.0.1:{port}"


async def _wait_ready(session: aiohttp.ClientSession, url: str, process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"gateway at {url} exited with {process.returncode}")
        try:
            async with session.get(url + "/readyz") as answer:
                if answer.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"gateway at {url} did not become ready")


@pytest.fixture
async def two_gateways(base_env, tmp_path, gateway_schema) -> AsyncIterator[list[str]]:
    started = [await _start_gateway(base_env, tmp_path / f"gateway-{i}.log") for i in range(2)]
    try:
        async with aiohttp.ClientSession() as session:
            for process, url in started:
                await _wait_ready(session, url, process)
        yield [url for _, url in started]
    finally:
        for process, _ in started:
            if process.returncode is None:
                process.terminate()
        for process, _ in started:
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


async def test_the_limit_holds_across_two_processes(two_gateways, make_tenant, pg_pool):
    tenant = await make_tenant("viewer")
    bystander = await make_tenant("viewer")
    await TenantStore(pg_pool).set_tenant_options(tenant.id, rate_limit=LIMIT, early_access=False)
    answers: list[tuple[str, int, dict[str, str]]] = []
    async with aiohttp.ClientSession() as session:

        async def call(url: str) -> None:
            async with session.get(url + "/v1/connections", headers=tenant.auth) as answer:
                await answer.read()
                answers.append((url, answer.status, dict(answer.headers)))

        # Both replicas at once, interleaved, well past the limit.
        await asyncio.gather(*(call(two_gateways[i % 2]) for i in range(3 * LIMIT)))
        async with session.get(two_gateways[0] + "/v1/connections", headers=bystander.auth) as ok:
            assert ok.status == 200  # another tenant has its own budget

    statuses = [status for _, status, _ in answers]
    assert set(statuses) == {200, 429}
    served = statuses.count(200)
    # The shared counter is the truth: every served request was counted once, and no
    # window was spent beyond the limit.
    rows = await pg_pool.fetch(
        "SELECT used FROM gateway.rate_limit_windows WHERE tenant_id = $1::uuid", tenant.id
    )
    assert sum(r["used"] for r in rows) == served
    assert all(r["used"] <= LIMIT for r in rows)
    assert served == LIMIT * len(rows)
    for url in two_gateways:
        refused = [h for u, s, h in answers if u == url and s == 429]
        assert refused, f"{url} never refused"
        assert int(refused[0]["Retry-After"]) > 0
        assert refused[0]["RateLimit-Remaining"] == "0"
        assert refused[0]["RateLimit-Limit"] == str(LIMIT)
    served_headers = [h for _, s, h in answers if s == 200]
    assert all(int(h["RateLimit-Remaining"]) < LIMIT for h in served_headers)
