"""What ``bench.launch``, ``bench.chaos`` and the fast chaos test share: a whole stack
as ``make up`` runs it, filled through its own front doors, and a publish load whose
every job is counted on the sandbox.

* :func:`open_stack` starts the devstack (``postd_common.devstack.driver``) on free
  ports in a temporary folder, with the sandbox approving consent at once.
* :func:`build_fleet` makes tenants with the gateway's CLI, seeds the sandbox in bulk
  (``POST /_sandbox/accounts``) and connects every account through the real OAuth
  flow: ``POST /v1/connect/{platform}`` → the sandbox's authorize endpoint → the
  gateway's callback (connectors exchanges the code, vault stores the tokens).
* :class:`PublishLoad` creates posts through ``POST /v1/posts``, each with a unique
  marker in its text and its own ``Idempotency-Key``; a create that fails (gateway or
  publisher down, 5xx, 429) is sent again with the same key and body until accepted,
  as a careful API client would. :meth:`PublishLoad.verdict` then compares the
  publisher's job rows with the sandbox's post log: published exactly once, in the
  DLQ with a reason, lost, duplicated, stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import psutil  # type: ignore[import-untyped]

from bench.baseline import percentile
from postd_common.devstack.driver import StackProcess, Tenant

# What every run hands the devstack. The sandbox approves consent at once (the OAuth
# dance without a person) and grants the Meta app an allowance for many users: Meta
# gives an app 200 calls an hour per daily user, the sandbox's default is sized for
# one developer.
STACK_ENV: Mapping[str, str] = {
    "POSTD_SANDBOX_AUTO_APPROVE": "1",
    "POSTD_SANDBOX_META_APP_CALLS_PER_HOUR": "100000000",
}
TERMINAL = frozenset({"PUBLISHED", "FAILED", "CANCELLED"})
# Connect order per tenant: (gateway platform, sandbox platform, seed list key).
DANCES: tuple[tuple[str, str, str], ...] = (
    ("facebook", "meta", "users"),
    ("instagram", "meta", "users"),
    ("linkedin", "linkedin", "members"),
    ("tiktok", "tiktok", "creators"),
    ("google_business", "google", "users"),
    ("mailchimp", "mailchimp", "users"),
)
# Bulk seed per platform for one tenant each: 2 Pages with Instagram (4 connections),
# a LinkedIn member with 2 organisations (3), a TikTok creator (1), a Business
# Profile owner with one location (1), a Mailchimp account (1): 10 per tenant.
SEEDS: Mapping[str, dict[str, Any]] = {
    "meta": {"pages_per_user": 2, "instagram": True},
    "linkedin": {"organizations_per_member": 2},
    "tiktok": {},
    "google": {"locations_per_user": 1},
    "mailchimp": {},
}
COUNT_KEY = {"meta": "users", "linkedin": "members", "tiktok": "creators"}
# Where the load publishes: platforms whose posts need no media and whose
# per-account limits the load stays within (Business Profile allows about ten edits a
# minute per location: a same-minute burst would measure that limit, not POSTD).
TEXT_PLATFORMS = ("facebook", "linkedin")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


@contextlib.asynccontextmanager
async def open_stack(
    extra_env: Mapping[str, str] | None = None, *, keep: bool = False
) -> AsyncIterator[StackProcess]:
    """A stack as ``make up`` runs it, in a temporary state folder, stopped after (the
    folder kept, with the stack's whole log, when ``keep`` or ``BENCH_KEEP_STACK=1``)."""
    state = Path(tempfile.mkdtemp(prefix="postd-stack-"))
    stack = await StackProcess.start(state / "state", env={**STACK_ENV, **(extra_env or {})})
    keep = keep or os.environ.get("BENCH_KEEP_STACK") == "1"
    try:
        yield stack
    finally:
        await stack.stop()
        if keep:
            print(f"stack state and log kept in {stack.state}", flush=True)
        else:
            import shutil

            shutil.rmtree(state, ignore_errors=True)


# --------------------------------------------------------------------------- the sandbox


class Sandbox:
    """The sandbox's control API (``/_sandbox/``)."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self.http.request(method, self.url + path, **kwargs) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"sandbox {method} {path}: {resp.status} {await resp.text()}")
            return await resp.json()

    async def seed(self, platform: str, count: int, **shape: Any) -> dict[str, Any]:
        bulk = {COUNT_KEY.get(platform, "users"): count, **shape}
        result: dict[str, Any] = await self._call(
            "POST", "/_sandbox/accounts", json={"platform": platform, "bulk": bulk}
        )
        return result

    async def consent(self, platform: str, account: str) -> None:
        await self._call(
            "POST", "/_sandbox/consent", json={"platform": platform, "account": account}
        )

    async def posts(self, text_contains: str = "") -> list[dict[str, Any]]:
        params = {"text_contains": text_contains} if text_contains else {}
        body = await self._call("GET", "/_sandbox/posts", params=params)
        found: list[dict[str, Any]] = body["posts"]
        return found

    async def fault(self, **fault: Any) -> dict[str, Any]:
        made: dict[str, Any] = await self._call("POST", "/_sandbox/faults", json=fault)
        return made

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_sandbox/faults")

    async def revoke(self, platform: str, account: str) -> int:
        body = await self._call(
            "POST", "/_sandbox/tokens/revoke", json={"platform": platform, "account": account}
        )
        return int(body.get("revoked", 0))

    async def advance_clock(self, seconds: float) -> None:
        await self._call("POST", "/_sandbox/clock", json={"advance_seconds": seconds})

    async def tokens(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self._call("GET", "/_sandbox/tokens"))["tokens"]
        return found


# --------------------------------------------------------------------------- tenants


@dataclass
class Member:
    """A tenant of the run, its connections and the sandbox accounts behind them."""

    tenant: Tenant
    accounts: dict[str, str] = field(default_factory=dict)  # sandbox platform -> login
    connections: list[dict[str, Any]] = field(default_factory=list)

    def targets(self, platforms: Iterable[str] = TEXT_PLATFORMS) -> list[dict[str, Any]]:
        wanted = set(platforms)
        return [c for c in self.connections if c["platform"] in wanted]


@dataclass
class Fleet:
    members: list[Member]
    dances: int
    dance_seconds: float

    @property
    def connections(self) -> int:
        return sum(len(m.connections) for m in self.members)

    def by_platform(self) -> Counter[str]:
        return Counter(c["platform"] for m in self.members for c in m.connections)


class Gateway:
    """Calls to the public API as one tenant."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url = url
        self.http = http

    async def json(
        self,
        method: str,
        path: str,
        tenant: Tenant,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        expect: Sequence[int] = (200,),
        refused_for: float = 30.0,
    ) -> Any:
        """One call; a refused connection (the gateway restarting: the request never
        reached it) is tried again for up to ``refused_for`` seconds."""
        deadline = time.monotonic() + refused_for
        while True:
            try:
                async with self.http.request(
                    method,
                    self.url + path,
                    json=body,
                    headers={**tenant.auth, **(headers or {})},
                    allow_redirects=False,
                ) as resp:
                    text = await resp.text()
                    if resp.status not in expect:
                        raise RuntimeError(f"{method} {path}: {resp.status} {text[:300]}")
                    if resp.content_type == "application/json" and text:
                        return await resp.json()
                    return {"status": resp.status, "headers": dict(resp.headers)}
            except aiohttp.ClientConnectorError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)

    async def connections(self, tenant: Tenant) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = ""
        while True:
            query = "?limit=100" + (f"&cursor={cursor}" if cursor else "")
            page = await self.json("GET", "/v1/connections" + query, tenant)
            found += page["items"]
            cursor = page.get("next_cursor") or ""
            if not cursor:
                return found


async def oauth_dance(
    http: aiohttp.ClientSession,
    stack: StackProcess,
    sandbox: Sandbox,
    tenant: Tenant,
    platform: str,
    sandbox_platform: str,
    account: str,
    lock: asyncio.Lock,
    *,
    reconnect: str = "",
) -> str:
    """Connect ``account`` for ``tenant`` the way a browser does; returns where the
    gateway's callback sent the browser. The consent directive and the authorize
    request are paired under ``lock`` (the sandbox pairs them in order)."""
    start = "/v1/connect/" + platform
    if reconnect:
        start = f"/v1/connections/{reconnect}/reconnect"
    began = await Gateway(stack.gateway_url, http).json("POST", start, tenant, body={})
    authorize_url = began["authorize_url"]
    async with lock:
        await sandbox.consent(sandbox_platform, account)
        async with http.get(authorize_url, allow_redirects=False) as resp:
            if resp.status != 302:
                raise RuntimeError(f"authorize {platform}: {resp.status} {await resp.text()}")
            callback = urlsplit(resp.headers["Location"])
    async with http.get(
        f"{stack.gateway_url}{callback.path}?{callback.query}", allow_redirects=False
    ) as resp:
        where = resp.headers.get("Location", "")
    if "connect=ok" not in where:
        raise RuntimeError(f"connect {platform} for {tenant.slug}: {where}")
    return where


async def build_fleet(
    stack: StackProcess,
    http: aiohttp.ClientSession,
    *,
    tenants: int,
    slug: str = "bench",
    dances: Sequence[tuple[str, str, str]] = DANCES,
    concurrency: int = 16,
) -> Fleet:
    """``tenants`` tenants, each with one account per platform of ``dances`` seeded
    in the sandbox and connected through OAuth."""
    sandbox = Sandbox(stack.sandbox_url, http)
    made = await stack.create_tenants(f"{slug}-{uuid.uuid4().hex[:6]}", tenants)
    members = [Member(t) for t in made]
    for sandbox_platform in dict.fromkeys(d[1] for d in dances):
        seeded = await sandbox.seed(sandbox_platform, tenants, **SEEDS[sandbox_platform])
        key = next(d[2] for d in dances if d[1] == sandbox_platform)
        for member, login in zip(members, seeded[key], strict=True):
            member.accounts[sandbox_platform] = str(login)
    locks = {p: asyncio.Lock() for p in SEEDS}
    gate = asyncio.Semaphore(concurrency)
    gateway = Gateway(stack.gateway_url, http)
    began = time.perf_counter()

    async def connect(member: Member) -> None:
        async with gate:
            for platform, sandbox_platform, _ in dances:
                await oauth_dance(
                    http,
                    stack,
                    sandbox,
                    member.tenant,
                    platform,
                    sandbox_platform,
                    member.accounts[sandbox_platform],
                    locks[sandbox_platform],
                )
            member.connections = await gateway.connections(member.tenant)

    await asyncio.gather(*(connect(m) for m in members))
    return Fleet(members, tenants * len(dances), time.perf_counter() - began)


# --------------------------------------------------------------------------- the load


@dataclass
class PlannedJob:
    """One post with one target, as created through the API."""

    n: int
    member: Member
    connection_id: str
    platform: str
    due: datetime
    key: str
    text: str
    job_id: str = ""
    accepted_at: float = 0.0  # wall clock
    create_attempts: int = 0
    # The API said no for good (a 4xx other than 408/409/429): the client was told,
    # so the post is not a job; kept with the reason.
    refused: str = ""


@dataclass
class Verdict:
    """How the jobs of a load ended."""

    jobs: int
    published: int
    on_platform: int  # distinct markers seen on the sandbox
    duplicates: int  # extra copies of a marker on the sandbox
    lost: int  # neither published (once) nor dead-lettered with a reason
    dlq: int
    dlq_without_reason: int
    stuck: int  # not in an end state when the run gave up waiting
    not_accepted: int  # creates never answered for good (the client gave up)
    refused: int  # creates the API refused with a reason (not jobs)
    states: Counter[str]
    # Jobs the publisher marked PUBLISHED whose marker is not on the sandbox, and
    # markers on the sandbox whose job is not PUBLISHED.
    published_not_on_platform: int
    on_platform_not_published: int
    # For each job of the two above: its id, state and attempts' outcomes and reasons.
    mismatches: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return (
            self.duplicates == 0
            and self.lost == 0
            and self.stuck == 0
            and self.not_accepted == 0
            and self.dlq_without_reason == 0
            and self.published_not_on_platform == 0
            and self.on_platform_not_published == 0
        )


class PublishLoad:
    """Posts created through the gateway, each marked ``<run> <n>`` in its text."""

    def __init__(self, stack: StackProcess, http: aiohttp.ClientSession, run: str = "") -> None:
        self.stack = stack
        self.http = http
        self.run = run or f"ld{uuid.uuid4().hex[:10]}"
        self.jobs: list[PlannedJob] = []
        self.create_latencies: list[float] = []
        self.create_errors: Counter[str] = Counter()

    def plan(
        self,
        members: Sequence[Member],
        count: int,
        due: Sequence[datetime],
        *,
        platforms: Sequence[str] = TEXT_PLATFORMS,
    ) -> list[PlannedJob]:
        """``count`` posts, due at ``due[i]``: job i goes to platform
        ``platforms[i % len(platforms)]`` (repeat a name to weigh it), on the next of
        ``members``' connections there, in turn."""
        targets = {
            platform: [(m, c) for m in members for c in m.targets((platform,))]
            for platform in dict.fromkeys(platforms)
        }
        for platform, found in targets.items():
            if not found:
                raise RuntimeError(f"no {platform} connection to publish to")
        turn: Counter[str] = Counter()
        planned = []
        for i in range(count):
            n = len(self.jobs) + i
            platform = platforms[n % len(platforms)]
            member, connection = targets[platform][turn[platform] % len(targets[platform])]
            turn[platform] += 1
            planned.append(
                PlannedJob(
                    n=n,
                    member=member,
                    connection_id=connection["id"],
                    platform=connection["platform"],
                    due=due[i],
                    key=f"{self.run}-{n}",
                    text=f"Launch check {self.run} {n} of the day",
                )
            )
        self.jobs += planned
        return planned

    async def create(self, job: PlannedJob, *, give_up_after: float = 120.0) -> bool:
        """POST /v1/posts until accepted (same key, same body), refused for good (a
        4xx: recorded in ``job.refused``), or ``give_up_after`` seconds passed."""
        body = {
            "content": {"text": job.text},
            "targets": [{"connection_id": job.connection_id}],
            "schedule": {"publish_at": iso(job.due)},
        }
        headers = {**job.member.tenant.auth, "Idempotency-Key": job.key}
        deadline = time.monotonic() + give_up_after
        pause = 0.2
        while True:
            job.create_attempts += 1
            started = time.perf_counter()
            retry_after = 0.0
            try:
                async with self.http.post(
                    self.stack.gateway_url + "/v1/posts",
                    json=body,
                    headers=headers,
                    timeout=aiohttp.ClientTimeout(total=30),
                ) as resp:
                    if resp.status in (200, 201):
                        answer = await resp.json()
                        job.job_id = answer["post"]["jobs"][0]["id"]
                        job.accepted_at = time.time()
                        self.create_latencies.append(time.perf_counter() - started)
                        return True
                    self.create_errors[str(resp.status)] += 1
                    text = await resp.text()
                    if resp.status < 500 and resp.status not in (408, 409, 429):
                        job.refused = f"{resp.status} {text[:300]}"
                        return False
                    retry_after = float(resp.headers.get("Retry-After", "0") or 0)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.create_errors[type(exc).__name__] += 1
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(max(pause, retry_after))
            pause = min(2.0, pause * 1.5)

    async def create_all(self, jobs: Sequence[PlannedJob], *, concurrency: int = 32) -> float:
        """Create ``jobs`` with ``concurrency`` requests in flight; returns seconds."""
        gate = asyncio.Semaphore(concurrency)

        async def one(job: PlannedJob) -> None:
            async with gate:
                await self.create(job)

        began = time.perf_counter()
        await asyncio.gather(*(one(j) for j in jobs))
        return time.perf_counter() - began

    async def create_paced(
        self, jobs: Sequence[PlannedJob], per_second: float, *, lead: float | None = None
    ) -> None:
        """Start one create every 1/``per_second`` s, each retried on its own; with
        ``lead``, each post is due ``lead`` seconds after its first send."""
        began = time.perf_counter()
        tasks = []
        for i, job in enumerate(jobs):
            delay = began + i / per_second - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if lead is not None:
                job.due = datetime.now(UTC) + timedelta(seconds=lead)
            tasks.append(asyncio.create_task(self.create(job)))
        await asyncio.gather(*tasks)

    async def rows(self, pool: asyncpg.Pool) -> list[asyncpg.Record]:
        ids = [uuid.UUID(j.job_id) for j in self.jobs if j.job_id]
        rows: list[asyncpg.Record] = []
        for start in range(0, len(ids), 20_000):
            rows += await pool.fetch(
                "SELECT j.id, j.state, j.due_at, j.finished_at, j.attempt_count, "
                "j.dead_lettered, j.dispatch_count, d.reason AS dlq_reason "
                "FROM publisher.jobs j LEFT JOIN publisher.dead_letters d ON d.job_id = j.id "
                "WHERE j.id = ANY($1::uuid[])",
                ids[start : start + 20_000],
            )
        return rows

    async def settle(
        self, pool: asyncpg.Pool, *, timeout: float, allow: frozenset[str] = TERMINAL
    ) -> float:
        """Wait until every accepted job is in one of ``allow``; returns the time it
        took (or ``timeout``). Survives the database going away for a while."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            with contextlib.suppress(asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                rows = await self.rows(pool)
                accepted = sum(1 for j in self.jobs if j.job_id)
                if len(rows) == accepted and all(r["state"] in allow for r in rows):
                    return time.monotonic() - began
            await asyncio.sleep(0.5)
        return timeout

    async def verdict(self, pool: asyncpg.Pool, sandbox: Sandbox) -> Verdict:
        rows = {str(r["id"]): r for r in await self.rows(pool)}
        seen = Counter(
            p["text"] for p in await sandbox.posts(self.run) if not p.get("deleted", False)
        )
        states: Counter[str] = Counter()
        published = dlq = dlq_bare = stuck = lost = 0
        published_missing = platform_unpublished = 0
        mismatched: list[str] = []
        for job in self.jobs:
            row = rows.get(job.job_id)
            copies = seen.get(job.text, 0)
            if row is None:
                if job.refused:
                    states["REFUSED"] += 1
                elif job.job_id:
                    states["MISSING_ROW"] += 1
                    lost += 1
                else:
                    states["NOT_ACCEPTED"] += 1
                if copies:
                    platform_unpublished += 1
                continue
            states[row["state"]] += 1
            if row["state"] == "PUBLISHED":
                published += 1
                if copies == 0:
                    published_missing += 1
                    mismatched.append(job.job_id)
            elif copies:
                platform_unpublished += 1
                mismatched.append(job.job_id)
            if row["dead_lettered"] or row["state"] == "FAILED":
                dlq += 1
                if not (row["dlq_reason"] or "").strip():
                    dlq_bare += 1
            if row["state"] not in TERMINAL:
                stuck += 1
            elif row["state"] != "PUBLISHED" and not row["dead_lettered"]:
                lost += 1  # ended without being published or dead-lettered
        return Verdict(
            jobs=sum(1 for j in self.jobs if not j.refused),
            published=published,
            on_platform=sum(1 for j in self.jobs if seen.get(j.text)),
            duplicates=sum(n - 1 for n in seen.values() if n > 1),
            lost=lost + published_missing,
            dlq=dlq,
            dlq_without_reason=dlq_bare,
            stuck=stuck,
            not_accepted=sum(1 for j in self.jobs if not j.job_id and not j.refused),
            refused=sum(1 for j in self.jobs if j.refused),
            states=states,
            published_not_on_platform=published_missing,
            on_platform_not_published=platform_unpublished,
            mismatches=await self._histories(pool, mismatched),
        )

    async def _histories(self, pool: asyncpg.Pool, job_ids: list[str]) -> list[str]:
        """What happened to each of ``job_ids``, attempt by attempt (for a failure's
        message)."""
        told = []
        for job_id in job_ids:
            job = await pool.fetchrow(
                "SELECT state, state_reason FROM publisher.jobs WHERE id = $1",
                uuid.UUID(job_id),
            )
            attempts = await pool.fetch(
                "SELECT number, outcome, reason, worker_id FROM publisher.attempts "
                "WHERE job_id = $1 ORDER BY number",
                uuid.UUID(job_id),
            )
            steps = "; ".join(
                f"#{a['number']} {a['outcome']} ({a['worker_id']}): {a['reason']}" for a in attempts
            )
            state = f"{job['state']} ({job['state_reason']})" if job else "no row"
            told.append(f"job {job_id}: {state}; attempts: {steps}")
        return told


def lags_ms(rows: Iterable[asyncpg.Record], accepted: Mapping[str, float]) -> list[float]:
    """Due (or accepted, when later) → published and recorded, in milliseconds."""
    out = []
    for r in rows:
        if r["state"] != "PUBLISHED" or r["finished_at"] is None:
            continue
        start = max(r["due_at"].timestamp(), accepted.get(str(r["id"]), 0.0))
        out.append((r["finished_at"].timestamp() - start) * 1000)
    return out


def due_spread(start: datetime, count: int, seconds: float) -> list[datetime]:
    step = seconds / max(1, count)
    return [start + timedelta(seconds=i * step) for i in range(count)]


# --------------------------------------------------------------------------- memory


@dataclass
class MemorySampler:
    """RSS of each part of the stack (a service, PostgreSQL with its workers, the
    broker, the sandbox) sampled every ``interval`` seconds in the background."""

    stack: StackProcess
    interval: float = 1.0
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def parts(self) -> dict[str, list[int]]:
        pids = self.stack.pids()
        parts: dict[str, list[int]] = {
            name: [pid] for name, pid in pids.get("services", {}).items()
        }
        for name in ("postgres", "broker"):
            if isinstance(pids.get(name), int):
                parts[name] = [pids[name]]
        return parts

    def sample(self) -> dict[str, float]:
        """MB per part. PostgreSQL is many processes sharing its buffers: their
        proportional set sizes are summed, so the shared pages count once."""
        out: dict[str, float] = {}
        for name, pids in self.parts().items():
            total = 0
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(pid)
                    if name == "postgres":
                        family = [proc, *proc.children(recursive=True)]
                        total += sum(_pss(member) for member in family)
                    else:
                        total += proc.memory_info().rss
            out[name] = total / 2**20
        return out

    async def _run(self, began: float) -> None:
        while True:
            self.samples.append((time.time() - began, await asyncio.to_thread(self.sample)))
            await asyncio.sleep(self.interval)

    def start(self, began: float) -> None:
        """Sample from now on; times are seconds since ``began`` (a wall-clock time)."""
        self._task = asyncio.create_task(self._run(began))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def peak(self, since: float = 0.0, until: float = float("inf")) -> dict[str, float]:
        out: dict[str, float] = {}
        for at, values in self.samples:
            if since <= at <= until:
                for name, mb in values.items():
                    out[name] = max(out.get(name, 0.0), mb)
        return out


def _pss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_full_info().pss)
    except psutil.Error:
        return 0


def p(values: Sequence[float], q: float) -> float:
    return percentile(list(values), q)
