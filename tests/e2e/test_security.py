"""Hostile input against the whole stack as ``make up`` runs it (every service its own
process, the sandbox over HTTP): the gateway's own tests prove these on fakes of the
backends; these prove them end to end.

* Cross-tenant access on every resource: a second tenant's key gets 404 for each of
  the first tenant's real objects (connection, post, job, dead letter, webhook event
  and endpoint, alert, notification, health check, API key) — the route table is the
  gateway's own isolation table, so a resource added there is covered here — and its
  lists never show them; the owner's objects are untouched afterwards.
* Forged, tampered, stale and replayed webhooks of every platform, through the
  gateway's ``/webhooks/…``: a forgery is refused (401), a replay is acknowledged and
  stored once.
* Media URLs aimed at internal addresses (loopback, private ranges, link-local cloud
  metadata, IPv6 forms, other schemes) are refused by the API, and so are outbound
  webhook endpoints there.

The scan of every log line and every span of a full run for tokens is in
``test_chaos_fast.py`` (its run has the most failure paths); ``make audit`` runs
pip-audit over the lock file (see the README: it needs the internet).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bench.harness import DANCES, Gateway, Member, Sandbox, build_fleet, open_stack
from postd_common import db
from postd_common.devstack.driver import StackProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def gateway_isolation_table() -> tuple[list[Any], list[Any]]:
    """BY_ID and LISTS of the gateway's isolation test (on fakes), reused here."""
    path = ROOT / "services/gateway/tests/integration/test_isolation.py"
    spec = importlib.util.spec_from_file_location("gateway_isolation_table", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.BY_ID), list(module.LISTS)


BY_ID, LISTS = gateway_isolation_table()


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


@dataclass
class World:
    stack: StackProcess
    http: aiohttp.ClientSession
    pool: asyncpg.Pool
    gateway: Gateway
    sandbox: Sandbox
    owner: Member
    other: Member
    ids: dict[str, str]


async def wait_for(what: str, check: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def owners_objects(w: World) -> dict[str, str]:
    """One real object of every kind for the owner, made through the API."""
    gw, me = w.gateway, w.owner.tenant
    pages = [c for c in w.owner.connections if c["platform"] == "facebook"]
    page, other_page = pages[0], pages[1]
    ids = {"connection_id": page["id"]}

    async def post(body: dict[str, Any]) -> dict[str, Any]:
        made: dict[str, Any] = await gw.json(
            "POST",
            "/v1/posts",
            me,
            body=body,
            headers={"Idempotency-Key": uuid.uuid4().hex},
            expect=(201,),
        )
        return made

    later = await post(
        {
            "content": {"text": f"Spring menu {uuid.uuid4().hex[:6]}"},
            "targets": [{"connection_id": page["id"]}],
            "schedule": {"publish_at": "2030-03-01T09:00:00Z"},
            "requires_approval": True,
        }
    )
    ids["post_id"] = later["post"]["id"]
    ids["job_id"] = later["post"]["jobs"][0]["id"]
    # A post the platform refuses for good: dead-lettered with its reason.
    await w.sandbox.fault(
        platform="meta",
        account=page["external_id"],
        kind="platform_error",
        error="meta_blocked",
        path_contains="/feed",
    )
    refused = await post(
        {
            "content": {"text": f"Refused {uuid.uuid4().hex[:6]}"},
            "targets": [{"connection_id": page["id"]}],
        }
    )
    ids["dead_job_id"] = refused["post"]["jobs"][0]["id"]

    async def dead() -> bool:
        job = await gw.json("GET", f"/v1/jobs/{ids['dead_job_id']}", me)
        return bool(job.get("dead_lettered"))

    await wait_for("the refused job in the DLQ", dead)
    # A webhook from the platform about the owner's Page, routed to the owner.
    sent = await w.sandbox._call(
        "POST",
        "/_sandbox/webhooks/send",
        json={
            "platform": "meta",
            "event": "comment",
            "account": page["external_id"],
            "url": w.stack.gateway_url + "/webhooks/facebook",
        },
    )
    assert sent["status"] == 200, sent

    async def event() -> str:
        listed = await gw.json("GET", "/v1/webhook-events?limit=50", me)
        return str(listed["items"][0]["id"]) if listed["items"] else ""

    ids["event_id"] = await wait_for("the routed webhook event", event)
    endpoint = await gw.json(
        "POST",
        "/v1/webhook-endpoints",
        me,
        body={"url": "https://93.184.216.34/postd-hook", "event_types": ["post.published"]},
        headers={"Idempotency-Key": uuid.uuid4().hex},
        expect=(201,),
    )
    ids["endpoint_id"] = endpoint.get("endpoint", endpoint)["id"]
    key = await gw.json(
        "POST",
        "/v1/api-keys",
        me,
        body={"name": "second", "role": "viewer"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
        expect=(201,),
    )
    ids["key_id"] = key["id"]
    await gw.json("POST", f"/v1/connections/{page['id']}/check", me, body={"refresh": False})

    async def check() -> str:
        listed = await gw.json("GET", f"/v1/health/checks?connection_id={page['id']}", me)
        return str(listed["items"][0]["id"]) if listed["items"] else ""

    ids["check_id"] = await wait_for("a health check", check)
    # The other Page loses its token: a publish meets it, health alerts and notifies.
    await w.sandbox.revoke("meta", other_page["external_id"])
    await post(
        {
            "content": {"text": f"Lost {uuid.uuid4().hex[:6]}"},
            "targets": [{"connection_id": other_page["id"]}],
        }
    )

    async def alert() -> str:
        listed = await gw.json("GET", "/v1/alerts?limit=50", me)
        return str(listed["items"][0]["alert_id"]) if listed["items"] else ""

    async def notification() -> str:
        listed = await gw.json("GET", "/v1/notifications?limit=50", me)
        return str(listed["items"][0]["id"]) if listed["items"] else ""

    ids["alert_id"] = await wait_for("an alert", alert)
    ids["notification_id"] = await wait_for("a notification", notification)
    return ids


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    async with (
        open_stack() as stack,
        aiohttp.ClientSession() as http,
    ):
        fleet = await build_fleet(stack, http, tenants=2, slug="sec", dances=DANCES)
        pool = await db.create_pool(stack.database_url, min_size=1, max_size=2)
        try:
            w = World(
                stack=stack,
                http=http,
                pool=pool,
                gateway=Gateway(stack.gateway_url, http),
                sandbox=Sandbox(stack.sandbox_url, http),
                owner=fleet.members[0],
                other=fleet.members[1],
                ids={},
            )
            w.ids = await owners_objects(w)
            yield w
        finally:
            await pool.close()


# --------------------------------------------------------------------------- tenants


def lookalike(value: str) -> str:
    """An id of the same shape that names nothing (hex stays hex, digits digits)."""
    out = []
    for char in value:
        if char in "0123456789abcdef":
            out.append(secrets.choice("0123456789abcdef"))
        elif char.isalpha():
            out.append(secrets.choice("ghijklmnopqrstuvwxyz"))
        else:
            out.append(char)
    return "".join(out)


async def ask(w: World, method: str, path: str, payload: Any, auth: dict[str, str]) -> Any:
    async with w.http.request(
        method, w.stack.gateway_url + path, json=payload, headers=auth, allow_redirects=False
    ) as answer:
        body = await answer.json(content_type=None)
        return answer.status, answer.headers.get("Content-Type", ""), body


async def test_another_tenant_sees_nothing_of_mine(world: World, subtests: pytest.Subtests) -> None:
    """Another tenant's request for my object is answered exactly as a request for an
    object that does not exist (404, same code, same words but for the id it sent):
    it cannot read, change or even confirm the object."""
    w, ids = world, world.ids
    mine, theirs = w.owner.tenant.auth, w.other.tenant.auth
    nowhere = {name: lookalike(value) for name, value in ids.items()}
    for method, template, body, owner_status in BY_ID:
        path, payload = fill(template, ids), fill(body, ids)
        with subtests.test(f"{method} {template}"):
            status, content_type, problem = await ask(w, method, path, payload, theirs)
            assert status == 404, problem
            assert content_type.startswith("application/problem+json")
            assert str(problem["code"]).endswith("not_found"), problem
            ghost = await ask(w, method, fill(template, nowhere), fill(body, nowhere), theirs)
            assert ghost[0] == 404
            assert ghost[2]["code"] == problem["code"]
            said = str(problem.get("detail", ""))
            for name, value in ids.items():
                said = said.replace(value, f"<{name}>")
            unseen = str(ghost[2].get("detail", ""))
            for name, value in nowhere.items():
                unseen = unseen.replace(value, f"<{name}>")
            assert said == unseen
            if method == "GET":  # the id is real: its owner reads it
                owned = await ask(w, method, path, payload, mine)
                assert owned[0] == owner_status, owned
    for path, id_name in LISTS:
        wanted = ids["alert_id"] if path == "/v1/alerts" else ids[id_name]
        with subtests.test(f"list {path}"):
            async with w.http.get(w.stack.gateway_url + path, headers=theirs) as answer:
                assert answer.status == 200
                assert wanted not in await answer.text()
            async with w.http.get(w.stack.gateway_url + path, headers=mine) as answer:
                assert answer.status == 200
                assert wanted in await answer.text()
    with subtests.test("post to another tenant's connection"):
        async with w.http.post(
            w.stack.gateway_url + "/v1/posts",
            json={"content": {"text": "hi"}, "targets": [{"connection_id": ids["connection_id"]}]},
            headers={**theirs, "Idempotency-Key": uuid.uuid4().hex},
        ) as answer:
            assert answer.status == 404, await answer.text()
    with subtests.test("the owner's objects are untouched"):
        connection = await w.gateway.json(
            "GET", f"/v1/connections/{ids['connection_id']}", w.owner.tenant
        )
        assert connection["status"] == "healthy"
        post = await w.gateway.json("GET", f"/v1/posts/{ids['post_id']}", w.owner.tenant)
        assert post["jobs"][0]["state"] == "awaiting_approval"
        key = await w.gateway.json("GET", f"/v1/api-keys/{ids['key_id']}", w.owner.tenant)
        assert not key.get("revoked_at")
        endpoint = await w.gateway.json("GET", "/v1/webhook-endpoints", w.owner.tenant)
        assert ids["endpoint_id"] in str(endpoint)


# --------------------------------------------------------------------------- webhooks

# (sandbox platform, event, gateway path, keyed: needs an inbound key, timestamped:
# a stale delivery is refused by its signed time). As the router's own inbound test.
WEBHOOKS = [
    ("meta", "comment", "facebook", False, False),
    ("tiktok", "post_published", "tiktok", False, True),
    ("linkedin", "comment", "linkedin", False, False),
    ("shopify", "product_create", "shopify", False, False),
    ("slack", "message", "slack", False, True),
    ("google", "review", "google", False, True),
    ("mailchimp", "subscribe", "mailchimp", True, False),
    ("standard_webhooks", "thing.happened", "custom", True, True),
]
SIGNATURE_HEADERS = {
    "meta": "X-Hub-Signature-256",
    "tiktok": "TikTok-Signature",
    "linkedin": "X-LI-Signature",
    "shopify": "X-Shopify-Hmac-Sha256",
    "slack": "X-Slack-Signature",
    "google": "Authorization",
    "standard_webhooks": "webhook-signature",
}


def forge(value: str) -> str:
    """One signature character changed (the second-last alphanumeric one, to a digit
    that differs: a case change of hex is the same signature, and base64 padding bits
    could hide a change of the last)."""
    chars = list(value)
    j = [i for i, c in enumerate(chars) if c.isalnum()][-2]
    chars[j] = "1" if chars[j] == "0" else "0"
    return "".join(chars)


async def stored(pool: asyncpg.Pool, raw: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT verdict, duplicate_count, body IS NOT NULL AS has_body "
            "FROM webhooks.inbound_events WHERE body_sha256 = $1",
            hashlib.sha256(raw.encode()).hexdigest(),
        )
    )


async def test_forged_and_replayed_webhooks_of_every_platform(
    world: World, subtests: pytest.Subtests
) -> None:
    w = world
    mailchimp = next(c for c in w.owner.connections if c["platform"] == "mailchimp")
    for platform, event, path, keyed, timestamped in WEBHOOKS:
        with subtests.test(platform):
            url = f"{w.stack.gateway_url}/webhooks/{path}"
            if keyed:
                body: dict[str, Any] = {"platform": path}
                if path == "mailchimp":
                    body["connection_id"] = mailchimp["id"]
                made = await w.gateway.json(
                    "POST",
                    "/v1/webhook-inbound-keys",
                    w.owner.tenant,
                    body=body,
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                    expect=(201,),
                )
                url = w.stack.gateway_url + made["url_path"]
            common = {
                "platform": platform,
                "event": event,
                "url": url,
                "audience": "postd-webhooks",
            }
            good = await w.sandbox._call("POST", "/_sandbox/webhooks/send", json=common)
            assert good["status"] == 200, good
            assert [
                (r["verdict"], r["has_body"]) for r in await stored(w.pool, good["sent"]["raw"])
            ] == [("accepted", True)]
            # The very same delivery again (a retry, or a replay by someone who saw it).
            for _ in range(2):
                async with w.http.post(
                    url, data=good["sent"]["raw"].encode(), headers=good["sent"]["headers"]
                ) as again:
                    assert again.status == 200
            rows = await stored(w.pool, good["sent"]["raw"])
            assert len(rows) == 1
            assert rows[0]["duplicate_count"] == 2
            if platform != "mailchimp":  # Mailchimp signs nothing: its secret is the path
                header = SIGNATURE_HEADERS[platform]
                forged = {**good["sent"]["headers"], header: forge(good["sent"]["headers"][header])}
                async with w.http.post(
                    url, data=good["sent"]["raw"].encode(), headers=forged
                ) as answer:
                    assert answer.status == 401
                unsigned = {k: v for k, v in good["sent"]["headers"].items() if k != header}
                async with w.http.post(
                    url, data=good["sent"]["raw"].encode(), headers=unsigned
                ) as answer:
                    assert answer.status == 401
                if platform != "google":  # Pub/Sub's token signs the sender, not the body
                    tampered = await w.sandbox._call(
                        "POST", "/_sandbox/webhooks/send", json={**common, "tamper": "body"}
                    )
                    assert tampered["status"] == 401, tampered
            stale = await w.sandbox._call(
                "POST", "/_sandbox/webhooks/send", json={**common, "tamper": "stale_timestamp"}
            )
            assert stale["status"] == (401 if timestamped else 200), stale
            if keyed:
                wrong = await w.sandbox._call(
                    "POST",
                    "/_sandbox/webhooks/send",
                    json={**common, "url": f"{w.stack.gateway_url}/webhooks/{path}/not-a-key"},
                )
                assert wrong["status"] == 404, wrong


# --------------------------------------------------------------------------- SSRF

INTERNAL_URLS = [
    "http://127.0.0.1/image.jpg",
    "http://localhost/image.jpg",
    "http://[::1]/image.jpg",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://10.0.0.7/image.jpg",
    "http://192.168.1.1/image.jpg",
    "http://172.16.0.1/image.jpg",
    "http://0.0.0.0/image.jpg",
    "http://2130706433/image.jpg",  # 127.0.0.1 as one number
    "http://0x7f000001/image.jpg",
    "http://[::ffff:127.0.0.1]/image.jpg",
    "http://[fd00::1]/image.jpg",
    "http://user:pass@203.0.113.5/image.jpg",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
]


async def test_media_and_endpoints_aimed_inside_are_refused(
    world: World, subtests: pytest.Subtests
) -> None:
    w = world
    page = next(c for c in w.owner.connections if c["platform"] == "facebook")
    for url in INTERNAL_URLS:
        with subtests.test(f"media {url}"):
            content = {
                "text": "Look",
                "media": [{"url": url, "kind": "image", "mime_type": "image/jpeg"}],
            }
            async with w.http.post(
                w.stack.gateway_url + "/v1/posts",
                json={"content": content, "targets": [{"connection_id": page["id"]}]},
                headers={**w.owner.tenant.auth, "Idempotency-Key": uuid.uuid4().hex},
            ) as answer:
                text = await answer.text()
                assert 400 <= answer.status < 500, (answer.status, text)
            async with w.http.post(
                w.stack.gateway_url + "/v1/posts/validate",
                json={"content": content, "targets": [{"connection_id": page["id"]}]},
                headers=w.owner.tenant.auth,
            ) as answer:
                report = await answer.json(content_type=None)
            if answer.status == 200:
                assert report["valid"] is False, report
                codes = {v["code"] for t in report["targets"] for v in t["violations"]}
                # Refused for where it points, or (a name no resolver here knows)
                # unreachable: either way nothing was fetched.
                assert codes & {"media_url_refused", "media_unreachable"}, report
            else:
                assert 400 <= answer.status < 500, report
        with subtests.test(f"endpoint {url}"):
            async with w.http.post(
                w.stack.gateway_url + "/v1/webhook-endpoints",
                json={"url": url, "event_types": ["post.published"]},
                headers={**w.owner.tenant.auth, "Idempotency-Key": uuid.uuid4().hex},
            ) as answer:
                assert 400 <= answer.status < 500, (answer.status, await answer.text())
    # Nothing was fetched from inside: no post was published with such media.
    posts = await w.sandbox.posts()
    assert not [p for p in posts if any("169.254" in m or "127.0.0.1" in m for m in p["media"])]
