"""Mailchimp against the sandbox over real HTTP: OAuth, the metadata call for the
data-center host, audiences, campaign create -> content -> send or schedule, tokens
that never expire (checked by a ping), reconciliation by the key in the title."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd_connectors.domain.model import PlatformFailure

pytestmark = pytest.mark.integration

ACCOUNT = "10000001"
COFFEE_CLUB = "a1b2c3d4e5"


async def _connect(harness: Any, tenant: str) -> pb.Connection:
    result = await harness.connect(tenant, "mailchimp")
    (item,) = result.connections
    return item.connection


async def _publish(
    harness: Any, tenant: str, connection_id: str, key: str | None = None, **options: str
) -> Any:
    return await harness.stub("publisher").PublishPost(
        pb.PublishPostRequest(
            tenant_id=tenant,
            connection_id=connection_id,
            idempotency_key=key or str(uuid.uuid4()),
            content=common_pb2.PostContent(
                title="Our winter blend is here",
                text="Cinnamon, clove and a hint of orange.\n\nIn shops today.",
                link="https://sandbox-coffee.example.com/winter",
                options={"mailchimp.list_id": COFFEE_CLUB, **options},
            ),
        )
    )


async def test_dance_learns_the_data_center(harness: Any, tenant: str) -> None:
    start = await harness.stub().StartAuth(
        pb.StartAuthRequest(
            tenant_id=tenant,
            user_id="u",
            platform="mailchimp",
            redirect_uri="https://app.postd.test/oauth/callback",
        )
    )
    assert "code_challenge" not in start.authorize_url
    assert list(start.requested_scopes) == []
    connection = await _connect(harness, tenant)
    assert connection.external_id == ACCOUNT
    assert connection.account_name == "Sandbox Coffee Co"
    assert not connection.HasField("expires_at")  # never expires
    assert not connection.has_refresh_token
    stored = harness.service.connectors["mailchimp"]
    assert stored is not None
    # Health is a ping, not an expiry date.
    refresh = await harness.stub("health").RefreshConnection(
        pb.RefreshConnectionRequest(tenant_id=tenant, connection_id=connection.id, force=True)
    )
    assert refresh.outcome == pb.REFRESH_OUTCOME_CHECKED
    assert refresh.check.ok


async def test_campaign_is_created_filled_and_sent(harness: Any, tenant: str) -> None:
    connection = await _connect(harness, tenant)
    result = await _publish(harness, tenant, connection.id)
    assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
    (post,) = await harness.posts(platform="mailchimp", account=ACCOUNT)
    assert post["id"] == result.platform_post_id
    assert post["status"] == "sending"
    assert post["text"] == "Our winter blend is here"
    settings = post["request_fields"]["settings"]
    assert settings["from_name"] == "Coffee Club"  # the audience's defaults
    assert settings["title"].startswith("POSTD ")
    report = await harness.stub().GetPostAnalytics(
        pb.GetPostAnalyticsRequest(
            tenant_id=tenant,
            connection_id=connection.id,
            platform_post_ids=[result.platform_post_id],
        )
    )
    assert report.posts[0].metrics.reach == 1200


async def test_campaign_can_be_scheduled(harness: Any, tenant: str) -> None:
    connection = await _connect(harness, tenant)
    when = (datetime.now(UTC) + timedelta(days=2)).replace(minute=30, second=0, microsecond=0)
    result = await _publish(
        harness, tenant, connection.id, **{"mailchimp.schedule_time": when.isoformat()}
    )
    assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
    (post,) = await harness.posts(platform="mailchimp", account=ACCOUNT)
    assert post["status"] == "scheduled"
    bad = await _publish(
        harness,
        tenant,
        connection.id,
        **{"mailchimp.schedule_time": when.replace(minute=7).isoformat()},
    )
    assert bad.error.category == common_pb2.ERROR_CATEGORY_CONTENT_REJECTED
    assert "quarter-hour" in bad.error.message


async def test_lost_send_is_reconciled_by_the_key(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    connection = await _connect(harness, tenant)
    key = str(uuid.uuid4())
    await harness.fault(platform="mailchimp", kind="lost_response", path_contains="/actions/send")
    error = await rpc_error(_publish(harness, tenant, connection.id, key))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    found = await harness.stub("publisher").FindPost(
        pb.FindPostRequest(tenant_id=tenant, connection_id=connection.id, idempotency_key=key)
    )
    assert found.found
    assert found.matched_by == pb.POST_MATCH_IDEMPOTENCY_KEY
    retry = await _publish(harness, tenant, connection.id, key)
    assert retry.reconciled
    assert len(await harness.posts(platform="mailchimp", account=ACCOUNT)) == 1


async def test_lost_create_reuses_the_draft(harness: Any, tenant: str, rpc_error: Any) -> None:
    connection = await _connect(harness, tenant)
    key = str(uuid.uuid4())
    await harness.fault(platform="mailchimp", kind="lost_response", path_contains="/3.0/campaigns")
    error = await rpc_error(_publish(harness, tenant, connection.id, key))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    retry = await _publish(harness, tenant, connection.id, key)
    assert retry.status == pb.PUBLISH_STATUS_PUBLISHED, retry.error
    (post,) = await harness.posts(platform="mailchimp", account=ACCOUNT)
    assert post["status"] == "sending"


async def test_audience_is_required_and_checked(harness: Any, tenant: str) -> None:
    connection = await _connect(harness, tenant)
    report = (
        await harness.stub("publisher").ValidatePost(
            pb.ValidatePostRequest(
                tenant_id=tenant,
                targets=[pb.ValidationTarget(connection_id=connection.id)],
                content=common_pb2.PostContent(text="Hi", title="Subject"),
            )
        )
    ).report
    assert [v.message for v in report.targets[0].violations] == [
        "Mailchimp needs the option mailchimp.list_id for email campaigns."
    ]
    caps = await harness.stub("publisher").GetCapabilities(
        pb.GetCapabilitiesRequest(tenant_id=tenant, connection_id=connection.id)
    )
    choices = {c.option: list(c.values) for c in caps.platforms[0].formats[0].option_choices}
    assert choices["list_id"] == [COFFEE_CLUB, "f6e5d4c3b2"]
    unknown = (
        await harness.stub("publisher").ValidatePost(
            pb.ValidatePostRequest(
                tenant_id=tenant,
                targets=[pb.ValidationTarget(connection_id=connection.id)],
                content=common_pb2.PostContent(
                    text="Hi", title="Subject", options={"mailchimp.list_id": "nope"}
                ),
            )
        )
    ).report
    assert [v.message for v in unknown.targets[0].violations] == [
        "Mailchimp accepts a1b2c3d4e5, f6e5d4c3b2 for mailchimp.list_id; got 'nope'."
    ]
    wrong = await _publish(harness, tenant, connection.id, **{"mailchimp.list_id": "nope"})
    assert wrong.error.category == common_pb2.ERROR_CATEGORY_CONTENT_REJECTED
    assert "list_id" in wrong.error.message


async def test_revoked_token_is_revoked_never_expired(harness: Any, tenant: str) -> None:
    connection = await _connect(harness, tenant)
    await harness.control(
        "POST", "/_sandbox/tokens/revoke", json={"platform": "mailchimp", "account": ACCOUNT}
    )
    check = await harness.stub("health").CheckConnection(
        pb.CheckConnectionRequest(tenant_id=tenant, connection_id=connection.id)
    )
    assert not check.result.ok
    assert check.result.error.category == common_pb2.ERROR_CATEGORY_AUTH_REVOKED
    result = await _publish(harness, tenant, connection.id)
    assert result.error.category == common_pb2.ERROR_CATEGORY_AUTH_REVOKED


@pytest.mark.parametrize(
    ("fault", "category"),
    [
        ({"kind": "rate_limit", "retry_after": 5}, common_pb2.ERROR_CATEGORY_RATE_LIMITED),
        ({"kind": "server_error"}, common_pb2.ERROR_CATEGORY_TRANSIENT),
        ({"kind": "outage"}, common_pb2.ERROR_CATEGORY_PLATFORM_OUTAGE),
        ({"kind": "permission_removed"}, common_pb2.ERROR_CATEGORY_PERMISSION_MISSING),
    ],
)
async def test_faults_map_to_categories(
    harness: Any, tenant: str, fault: dict[str, Any], category: int
) -> None:
    connection = await _connect(harness, tenant)
    await harness.fault(platform="mailchimp", path_contains="/3.0/campaigns", **fault)
    result = await _publish(harness, tenant, connection.id)
    assert result.error.category == category, result.error


def test_an_unexpected_data_center_host_is_refused(harness: Any) -> None:
    connector = harness.service.connectors["mailchimp"]
    with pytest.raises(PlatformFailure):
        connector._checked_endpoint("https://evil.example.com")
    with pytest.raises(PlatformFailure):
        connector._checked_endpoint("http://169.254.169.254")
