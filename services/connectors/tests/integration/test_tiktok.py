"""TikTok against the sandbox over real HTTP: OAuth v2 with client_key and PKCE,
rotating refresh tokens, creator info, chunked uploads that survive a failed chunk,
status polling, and error categories."""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import grpc
import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb
from postd_connectors import convert
from postd_connectors.domain.oauth import s256_challenge
from postd_connectors.platforms.tiktok import MB, plan_chunks
from postd_sandbox.faults import Fault, FaultKind
from postd_sandbox.keys import STATE_KEY

pytestmark = pytest.mark.integration

CREATOR = "-000SbxOpenId0001"
PRIVATE = {"tiktok.privacy_level": "SELF_ONLY"}


@pytest.fixture
def harness_env() -> dict[str, str]:
    return {"POSTD_TIKTOK_CHUNK_BYTES": str(5 * MB)}


@pytest.fixture(scope="module")
def big_video(media_dir: Path) -> Path:
    """A real MP4 followed by padding: 16 MB, so three chunks of 5, 5 and 6 MB."""
    path = media_dir / "big.mp4"
    if not path.exists():
        head = (media_dir / "clip.mp4").read_bytes()
        path.write_bytes(head + os.urandom(16 * MB - len(head)))
    return path


async def _connect(harness: Any, tenant: str, **consent: Any) -> pb.Connection:
    result = await harness.connect(
        tenant, "tiktok", capabilities=("publish", "analytics"), **consent
    )
    (item,) = result.connections
    return item.connection


async def _publish(
    harness: Any, tenant: str, connection_id: str, url: str, key: str | None = None, **options: str
) -> Any:
    return await harness.stub("publisher").PublishPost(
        pb.PublishPostRequest(
            tenant_id=tenant,
            connection_id=connection_id,
            idempotency_key=key or str(uuid.uuid4()),
            content=common_pb2.PostContent(
                text="Morning pour-over #coffee",
                media=[common_pb2.MediaItem(url=url, kind=common_pb2.MEDIA_KIND_VIDEO)],
                options={**PRIVATE, **options},
            ),
        )
    )


class UploadFaults:
    """Fails chosen upload requests (by their order), counting every upload request."""

    def __init__(
        self, harness: Any, monkeypatch: pytest.MonkeyPatch, fail: dict[int, FaultKind]
    ) -> None:
        self.requests = 0
        faults = harness.sandbox.app[STATE_KEY].faults
        original = faults.take

        def take(platform: str, accounts: set[str], path: str) -> Fault | None:
            if platform == "tiktok" and path.startswith("/tiktok/upload/video"):
                self.requests += 1
                kind = fail.get(self.requests)
                if kind is not None:
                    return Fault(f"upload-{self.requests}", "tiktok", "*", kind, times=1)
            return original(platform, accounts, path)

        monkeypatch.setattr(faults, "take", take)


def test_chunk_plans_follow_tiktoks_rules() -> None:
    assert plan_chunks(3 * MB) == plan_chunks(3 * MB, 5 * MB)
    small = plan_chunks(3 * MB, 5 * MB)
    assert (small.chunk_size, small.total) == (3 * MB, 1)
    plan = plan_chunks(16 * MB, 5 * MB)
    assert (plan.chunk_size, plan.total) == (5 * MB, 3)
    assert plan.range(2) == (10 * MB, 16 * MB - 1)
    huge = plan_chunks(4 * 1024 * MB, 5 * MB)
    assert huge.total <= 1000
    assert huge.video_size - huge.chunk_size * (huge.total - 1) <= 128 * MB


async def test_dance_with_pkce_and_rotating_refresh_tokens(harness: Any, tenant: str) -> None:
    connection = await _connect(harness, tenant)
    assert connection.external_id == CREATOR
    assert connection.username == "@sandboxcoffee"
    assert connection.has_refresh_token
    expires = convert.dt(connection.expires_at) - datetime.now(UTC)
    assert timedelta(hours=1, minutes=59) < expires <= timedelta(hours=2)
    assert "video.publish" in connection.scopes
    first = await harness.tokens.get(tenant, connection.id)
    refreshed = await harness.stub("health").RefreshConnection(
        pb.RefreshConnectionRequest(tenant_id=tenant, connection_id=connection.id, force=True)
    )
    assert refreshed.outcome == pb.REFRESH_OUTCOME_REFRESHED
    second = await harness.tokens.get(tenant, connection.id)
    # The new refresh token replaced the old one, atomically.
    assert second.bundle.refresh_token.reveal() != first.bundle.refresh_token.reveal()
    assert second.version == first.version + 1
    tokens = await harness.control("GET", "/_sandbox/tokens", params={"platform": "tiktok"})
    assert sum(1 for t in tokens["tokens"] if t["kind"] == "refresh" and t["rotated"]) == 1
    # An old refresh token used again is refused: TikTok treats it as a revocation.
    await harness.tokens.replace(tenant, connection.id, first.bundle)
    stale = await harness.stub("health").RefreshConnection(
        pb.RefreshConnectionRequest(tenant_id=tenant, connection_id=connection.id, force=True)
    )
    assert stale.outcome == pb.REFRESH_OUTCOME_FAILED
    assert stale.error.category == common_pb2.ERROR_CATEGORY_AUTH_REVOKED
    assert stale.error.action == common_pb2.ERROR_ACTION_RECONNECT


async def test_pkce_mismatch_and_denial_are_refused(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    start = await harness.stub().StartAuth(
        pb.StartAuthRequest(
            tenant_id=tenant,
            user_id="u",
            platform="tiktok",
            redirect_uri="https://app.postd.test/oauth/callback",
        )
    )
    assert "client_key=dev-tiktok-client-id" in start.authorize_url
    parts = urlsplit(start.authorize_url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["code_challenge"] = s256_challenge("someone-else-" + "v" * 40)
    await harness.consent(platform="tiktok")
    params = await harness.authorize(urlunsplit(parts._replace(query=urlencode(query))))
    error = await rpc_error(
        harness.stub().CompleteAuth(
            pb.CompleteAuthRequest(
                platform="tiktok", state=params["state"], code=params["code"], params=params
            )
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "proof did not match" in error.details()
    denied = await rpc_error(harness.connect(tenant, "tiktok", deny=True))
    assert denied.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await harness.stored_bundles(tenant) == 0


async def test_small_video_goes_whole_and_publishes(
    harness: Any, tenant: str, media_server: str, media_dir: Path
) -> None:
    connection = await _connect(harness, tenant)
    result = await _publish(harness, tenant, connection.id, f"{media_server}/media/clip.mp4")
    assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
    (post,) = await harness.posts(platform="tiktok", account=CREATOR)
    assert post["status"] == "published"
    assert post["request_fields"]["post_info"]["privacy_level"] == "SELF_ONLY"
    assert post["request_fields"]["source_info"]["total_chunk_count"] == 1
    upload = await harness.control("GET", f"/_sandbox/uploads/{post['id']}")
    assert upload["sha256"] == hashlib.sha256((media_dir / "clip.mp4").read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", [FaultKind.SERVER_ERROR, FaultKind.LOST_RESPONSE])
async def test_multi_chunk_upload_survives_a_failed_chunk(
    harness: Any,
    tenant: str,
    media_server: str,
    big_video: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: FaultKind,
) -> None:
    connection = await _connect(harness, tenant)
    uploads = UploadFaults(harness, monkeypatch, {2: kind})
    result = await _publish(
        harness, tenant, connection.id, f"{media_server}/media/{big_video.name}"
    )
    assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
    # Chunks 1, 2 (failed), 2 again, 3: resumed at the failed chunk, not from zero.
    assert uploads.requests == 4
    (post,) = await harness.posts(platform="tiktok", account=CREATOR)
    assert post["request_fields"]["source_info"]["total_chunk_count"] == 3
    upload = await harness.control("GET", f"/_sandbox/uploads/{post['id']}")
    assert upload["complete"]
    assert upload["size"] == 16 * MB
    assert upload["sha256"] == hashlib.sha256(big_video.read_bytes()).hexdigest()


async def test_upload_resumes_across_attempts(
    harness: Any, tenant: str, media_server: str, big_video: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = await _connect(harness, tenant)
    # Chunk 2 fails on every try of the first attempt.
    uploads = UploadFaults(
        harness,
        monkeypatch,
        {2: FaultKind.SERVER_ERROR, 3: FaultKind.SERVER_ERROR, 4: FaultKind.SERVER_ERROR},
    )
    key = str(uuid.uuid4())
    url = f"{media_server}/media/{big_video.name}"
    first = await _publish(harness, tenant, connection.id, url, key)
    assert first.status == pb.PUBLISH_STATUS_FAILED
    assert first.error.category == common_pb2.ERROR_CATEGORY_TRANSIENT
    assert uploads.requests == 4
    second = await _publish(harness, tenant, connection.id, url, key)
    assert second.status == pb.PUBLISH_STATUS_PUBLISHED, second.error
    # The second attempt sent chunks 2 and 3 only, to the same upload.
    assert uploads.requests == 6
    (post,) = await harness.posts(platform="tiktok", account=CREATOR)
    upload = await harness.control("GET", f"/_sandbox/uploads/{post['id']}")
    assert upload["sha256"] == hashlib.sha256(big_video.read_bytes()).hexdigest()


async def test_unaudited_app_cannot_post_publicly(
    harness: Any, tenant: str, media_server: str
) -> None:
    connection = await _connect(harness, tenant)
    result = await _publish(
        harness,
        tenant,
        connection.id,
        f"{media_server}/media/clip.mp4",
        **{"tiktok.privacy_level": "PUBLIC_TO_EVERYONE"},
    )
    assert result.status == pb.PUBLISH_STATUS_FAILED
    assert result.error.category == common_pb2.ERROR_CATEGORY_CONTENT_REJECTED
    assert "SELF_ONLY" in result.error.action_message
    offered = await _publish(
        harness,
        tenant,
        connection.id,
        f"{media_server}/media/clip.mp4",
        **{"tiktok.privacy_level": "FOLLOWER_OF_CREATOR"},
    )
    assert offered.error.category == common_pb2.ERROR_CATEGORY_CONTENT_REJECTED
    assert "offers the privacy levels" in offered.error.message


async def test_a_file_that_is_not_a_video_fails_in_plain_words(
    harness: Any, tenant: str, media_server: str
) -> None:
    connection = await _connect(harness, tenant)
    result = await _publish(harness, tenant, connection.id, f"{media_server}/media/square.jpg")
    assert result.status == pb.PUBLISH_STATUS_FAILED
    assert result.error.category == common_pb2.ERROR_CATEGORY_CONTENT_REJECTED
    assert result.error.platform_code == "file_format_check_failed"
    assert "file format" in result.error.message


FAULTS: list[tuple[dict[str, Any], int]] = [
    ({"kind": "rate_limit", "retry_after": 40}, common_pb2.ERROR_CATEGORY_RATE_LIMITED),
    (
        {"kind": "platform_error", "error": "spam_risk_too_many_posts"},
        common_pb2.ERROR_CATEGORY_QUOTA_EXCEEDED,
    ),
    (
        {"kind": "platform_error", "error": "reached_active_user_cap"},
        common_pb2.ERROR_CATEGORY_QUOTA_EXCEEDED,
    ),
    (
        {"kind": "platform_error", "error": "spam_risk_user_banned_from_posting"},
        common_pb2.ERROR_CATEGORY_CONTENT_REJECTED,
    ),
    ({"kind": "token_revoked"}, common_pb2.ERROR_CATEGORY_AUTH_REVOKED),
    ({"kind": "permission_removed"}, common_pb2.ERROR_CATEGORY_PERMISSION_MISSING),
    ({"kind": "server_error"}, common_pb2.ERROR_CATEGORY_TRANSIENT),
    ({"kind": "outage"}, common_pb2.ERROR_CATEGORY_PLATFORM_OUTAGE),
]


@pytest.mark.parametrize(
    ("fault", "category"), FAULTS, ids=[f[0].get("error", f[0]["kind"]) for f in FAULTS]
)
async def test_faults_on_init_map_to_categories(
    harness: Any, tenant: str, media_server: str, fault: dict[str, Any], category: int
) -> None:
    connection = await _connect(harness, tenant)
    await harness.fault(platform="tiktok", path_contains="/video/init", **fault)
    result = await _publish(harness, tenant, connection.id, f"{media_server}/media/clip.mp4")
    assert result.status == pb.PUBLISH_STATUS_FAILED
    assert result.error.category == category, result.error
    if "retry_after" in fault:
        assert result.error.retry_after.seconds == fault["retry_after"]


async def test_expired_token_refreshed_with_rotation_then_published(
    harness: Any, tenant: str, media_server: str
) -> None:
    connection = await _connect(harness, tenant)
    before = await harness.tokens.get(tenant, connection.id)
    await harness.control(
        "POST",
        "/_sandbox/tokens/expire",
        json={"platform": "tiktok", "access_token": before.bundle.access_token.reveal()},
    )
    result = await _publish(harness, tenant, connection.id, f"{media_server}/media/clip.mp4")
    assert result.status == pb.PUBLISH_STATUS_PUBLISHED, result.error
    after = await harness.tokens.get(tenant, connection.id)
    assert after.bundle.refresh_token.reveal() != before.bundle.refresh_token.reveal()


async def test_creator_limits_narrow_validation(
    harness: Any, tenant: str, media_server: str
) -> None:
    seeded = await harness.control(
        "POST",
        "/_sandbox/accounts",
        json={
            "platform": "tiktok",
            "creators": [{"username": "shortclips", "max_video_post_duration_sec": 60}],
        },
    )
    (open_id,) = seeded["creators"]
    connection = await _connect(harness, tenant, account=open_id)
    report = (
        await harness.stub("publisher").ValidatePost(
            pb.ValidatePostRequest(
                tenant_id=tenant,
                targets=[
                    pb.ValidationTarget(connection_id=connection.id),
                    pb.ValidationTarget(platform="tiktok"),
                ],
                content=common_pb2.PostContent(
                    text="long", media=[common_pb2.MediaItem(url=f"{media_server}/media/long.mp4")]
                ),
            )
        )
    ).report
    narrowed, generic = report.targets
    messages = [v.message for v in narrowed.violations]
    assert "TikTok videos can be at most 1 minute long; this one is 1 min 10 s." in messages
    assert "TikTok needs the option tiktok.privacy_level for video posts." in messages
    assert not any("at most" in v.message for v in generic.violations)
    caps = await harness.stub("publisher").GetCapabilities(
        pb.GetCapabilitiesRequest(tenant_id=tenant, connection_id=connection.id)
    )
    choices = {c.option: list(c.values) for c in caps.platforms[0].formats[0].option_choices}
    assert choices["privacy_level"] == ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "SELF_ONLY"]


def test_webhook_signature_rules(harness: Any) -> None:
    connector = harness.service.connectors["tiktok"]
    body = b'{"event":"post.publish.complete"}'
    now = 1_800_000_000
    sig = hmac.new(
        b"dev-tiktok-client-secret", f"{now}.".encode() + body, hashlib.sha256
    ).hexdigest()
    headers = {"TikTok-Signature": f"t={now},s={sig}"}
    assert connector.verify_webhook(headers, body, now=now + 10)
    assert not connector.verify_webhook(headers, body + b" ", now=now + 10)
    assert not connector.verify_webhook(headers, body, now=now + 3600)  # stale
