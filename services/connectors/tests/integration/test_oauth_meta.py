"""The OAuth dance for Facebook and Instagram against the sandbox over real HTTP:
authorize -> consent -> callback -> token (+ long-lived) -> accounts -> vault."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import grpc
import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd_connectors.domain.oauth import s256_challenge

pytestmark = pytest.mark.integration

COFFEE_PAGE = "200000000000001"
BAKERY_PAGE = "200000000000002"
COFFEE_IG = "17841400000000001"


async def _count(harness: Any, tenant: str) -> int:
    return int(
        await harness.pool.fetchval(
            "SELECT count(*) FROM connectors.connections WHERE tenant_id = $1", tenant
        )
    )


async def _start(harness: Any, tenant: str, platform: str = "facebook") -> pb.StartAuthResponse:
    return await harness.stub().StartAuth(
        pb.StartAuthRequest(
            tenant_id=tenant,
            user_id="u_1",
            platform=platform,
            redirect_uri="https://app.postd.test/oauth/callback",
        )
    )


async def test_facebook_dance_stores_tokens_in_the_vault_only(harness: Any, tenant: str) -> None:
    result = await harness.connect(tenant, "facebook", capabilities=("publish", "analytics"))

    by_page = {c.connection.external_id: c for c in result.connections}
    assert set(by_page) == {COFFEE_PAGE, BAKERY_PAGE}
    coffee = by_page[COFFEE_PAGE]
    assert coffee.created
    assert coffee.connection.status == common_pb2.CONNECTION_STATUS_HEALTHY
    assert coffee.connection.account_name == "Sandbox Coffee Co"
    assert coffee.connection.account_kind == "page"
    assert "pages_manage_posts" in coffee.connection.scopes
    assert list(result.missing_scopes) == []
    # The Page token and the long-lived user token it derives from are in the vault...
    assert await harness.stored_bundles(tenant) == 2
    stored = await harness.tokens.get(tenant, coffee.connection.id)
    page_token = stored.bundle.access_token.reveal()
    user_token = stored.bundle.extra["user_access_token"].reveal()
    assert page_token.startswith("EAAG")
    assert user_token.startswith("EAAG")
    assert page_token != user_token
    # ...and nowhere in the connectors schema.
    for table in ("connections", "connection_audit", "oauth_states", "outbox"):
        dump = await harness.pool.fetchval(
            f"SELECT coalesce(string_agg(t::text, ' '), '') FROM connectors.{table} t"
        )
        assert page_token not in dump, table
        assert user_token not in dump, table
    # The sandbox saw a long-lived user token exchange (about 60 days).
    tokens = await harness.control("GET", "/_sandbox/tokens", params={"platform": "meta"})
    kinds = {t["kind"] for t in tokens["tokens"]}
    assert {"access", "page"} <= kinds
    audit = await harness.stub().ListConnectionAudit(
        pb.ListConnectionAuditRequest(tenant_id=tenant, connection_id=coffee.connection.id)
    )
    assert [e.action for e in audit.entries] == ["connected"]
    assert audit.entries[0].actor == "user:u_1"


async def test_the_consent_page_a_person_clicks(harness: Any, tenant: str) -> None:
    start = await _start(harness, tenant)
    async with harness.http.get(start.authorize_url) as page:
        assert page.status == 200
        html = await page.text()
        action = str(page.url)
    pending = re.search(r'name="pending_id" value="([^"]+)"', html)
    assert pending is not None
    assert "Approve" in html
    offered = re.findall(r'name="scope" value="([^"]+)"', html)
    assert "pages_manage_posts" in offered
    form = [
        ("pending_id", pending.group(1)),
        ("decision", "approve"),
        ("subject", "10000000000002"),
    ]
    form += [("scope", s) for s in offered]
    async with harness.http.post(action, data=form, allow_redirects=False) as resp:
        assert resp.status == 302
        query = {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}
    result = await harness.stub().CompleteAuth(
        pb.CompleteAuthRequest(platform="facebook", state=query["state"], code=query["code"])
    )
    assert result.tenant_id == tenant
    assert [c.connection.account_name for c in result.connections] == ["Sandbox Bookshop"]


async def test_instagram_dance_finds_the_business_account(harness: Any, tenant: str) -> None:
    result = await harness.connect(tenant, "instagram")
    (ig,) = result.connections
    assert ig.connection.external_id == COFFEE_IG
    assert ig.connection.platform == "instagram"
    assert ig.connection.username == "@sandboxcoffee"
    assert "instagram_content_publish" in ig.connection.scopes


async def test_forged_state_is_refused_and_nothing_stored(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    start = await _start(harness, tenant)
    await harness.consent(platform="meta")
    params = await harness.authorize(start.authorize_url)
    error = await rpc_error(
        harness.stub().CompleteAuth(
            pb.CompleteAuthRequest(
                platform="facebook", state="forged-" + params["state"][7:], code=params["code"]
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "start connecting again" in error.details()
    assert await _count(harness, tenant) == 0
    assert await harness.stored_bundles(tenant) == 0


async def test_reused_state_is_refused(harness: Any, tenant: str, rpc_error: Any) -> None:
    start = await _start(harness, tenant)
    await harness.consent(platform="meta")
    params = await harness.authorize(start.authorize_url)
    request = pb.CompleteAuthRequest(
        platform="facebook", state=params["state"], code=params["code"]
    )
    first = await harness.stub().CompleteAuth(request)
    assert len(first.connections) == 2
    error = await rpc_error(harness.stub().CompleteAuth(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await _count(harness, tenant) == 2


async def test_state_of_another_tenant_or_platform_is_refused(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    start = await _start(harness, tenant)
    await harness.consent(platform="meta")
    params = await harness.authorize(start.authorize_url)
    error = await rpc_error(
        harness.stub().CompleteAuth(
            pb.CompleteAuthRequest(
                tenant_id="someone-else",
                platform="facebook",
                state=params["state"],
                code=params["code"],
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert await _count(harness, tenant) == 0


async def test_denied_consent_is_refused_in_plain_words(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    error = await rpc_error(harness.connect(tenant, "facebook", deny=True))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "declined" in error.details()
    assert "nothing was connected" in error.details()
    assert await _count(harness, tenant) == 0
    assert await harness.stored_bundles(tenant) == 0


async def test_pkce_mismatch_is_refused_and_nothing_stored(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    start = await _start(harness, tenant)
    assert "code_challenge_method=S256" in start.authorize_url
    # An attacker swaps the challenge in the authorize URL: the code is bound to theirs.
    parts = urlsplit(start.authorize_url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["code_challenge"] = s256_challenge("attacker-verifier-" + "x" * 40)
    tampered = urlunsplit(parts._replace(query=urlencode(query)))
    await harness.consent(platform="meta")
    params = await harness.authorize(tampered)
    error = await rpc_error(
        harness.stub().CompleteAuth(
            pb.CompleteAuthRequest(platform="facebook", state=params["state"], code=params["code"])
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "PKCE" in error.details()
    assert "Nothing was connected" in error.details()
    assert await _count(harness, tenant) == 0
    assert await harness.stored_bundles(tenant) == 0


async def test_partial_consent_reports_missing_scopes(harness: Any, tenant: str) -> None:
    result = await harness.connect(
        tenant,
        "facebook",
        scopes=["public_profile", "pages_show_list", "pages_read_engagement"],
    )
    assert list(result.missing_scopes) == ["pages_manage_posts"]
    for item in result.connections:
        assert item.connection.status == common_pb2.CONNECTION_STATUS_ATTENTION
        assert list(item.connection.missing_scopes) == ["pages_manage_posts"]
        assert "pages_manage_posts" in item.connection.status_reason


async def test_reconnect_updates_the_same_connection(harness: Any, tenant: str) -> None:
    first = await harness.connect(tenant, "facebook")
    second = await harness.connect(tenant, "facebook")
    ids_first = {c.connection.external_id: c.connection.id for c in first.connections}
    ids_second = {c.connection.external_id: c.connection.id for c in second.connections}
    assert ids_first == ids_second
    assert not any(c.created for c in second.connections)
    assert await _count(harness, tenant) == 2
    audit = await harness.stub().ListConnectionAudit(
        pb.ListConnectionAuditRequest(tenant_id=tenant, connection_id=ids_first[COFFEE_PAGE])
    )
    assert [e.action for e in audit.entries] == ["reconnected", "connected"]


async def test_another_tenants_connection_is_not_found(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    result = await harness.connect(tenant, "facebook")
    connection_id = result.connections[0].connection.id
    error = await rpc_error(
        harness.stub().GetConnection(
            pb.GetConnectionRequest(tenant_id="another-tenant", connection_id=connection_id)
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    found = await harness.stub().GetConnection(
        pb.GetConnectionRequest(tenant_id=tenant, connection_id=connection_id)
    )
    assert found.connection.id == connection_id


async def test_unregistered_caller_is_refused(harness: Any, tenant: str, rpc_error: Any) -> None:
    error = await rpc_error(
        harness.stub("publisher").StartAuth(
            pb.StartAuthRequest(
                tenant_id=tenant, user_id="u", platform="facebook", redirect_uri="https://x.test/cb"
            )
        )
    )
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
