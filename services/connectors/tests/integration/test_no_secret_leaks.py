"""No token or client secret reaches a log record, an error message or a response of
connectors, across connects, publishes, failures, refreshes and reconnects."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb

pytestmark = pytest.mark.integration


class Everything(logging.Handler):
    """Keeps every record as raw as it arrives (fields before any formatter)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(("postd_connectors", "postd_common")):
            return
        fields = getattr(record, "postd_fields", {})
        self.lines.append(f"{record.getMessage()} {fields!r} {record.exc_text or ''}")


@pytest.fixture
def captured() -> Any:
    handler = Everything()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(previous)


async def test_no_secret_in_logs_errors_or_responses(
    harness: Any, tenant: str, captured: Any, media_server: str
) -> None:
    responses: list[str] = []
    facebook = await harness.connect(tenant, "facebook")
    tiktok = await harness.connect(tenant, "tiktok")
    responses += [str(facebook), str(tiktok)]
    page = facebook.connections[0].connection
    creator = tiktok.connections[0].connection
    for fault in ({"kind": "token_revoked"}, {"kind": "rate_limit"}, {"kind": "server_error"}):
        await harness.fault(platform="meta", **fault)
        result = await harness.stub("publisher").PublishPost(
            pb.PublishPostRequest(
                tenant_id=tenant,
                connection_id=page.id,
                idempotency_key=str(uuid.uuid4()),
                content=common_pb2.PostContent(text="secret-free"),
            )
        )
        responses.append(str(result))
    before = await harness.tokens.get(tenant, creator.id)
    await harness.control(
        "POST",
        "/_sandbox/tokens/expire",
        json={"platform": "tiktok", "access_token": before.bundle.access_token.reveal()},
    )
    responses.append(
        str(
            await harness.stub("publisher").PublishPost(
                pb.PublishPostRequest(
                    tenant_id=tenant,
                    connection_id=creator.id,
                    idempotency_key=str(uuid.uuid4()),
                    content=common_pb2.PostContent(
                        text="after refresh",
                        media=[common_pb2.MediaItem(url=f"{media_server}/media/clip.mp4")],
                        options={"tiktok.privacy_level": "SELF_ONLY"},
                    ),
                )
            )
        )
    )
    responses.append(
        str(
            await harness.stub("health").RefreshConnection(
                pb.RefreshConnectionRequest(tenant_id=tenant, connection_id=creator.id, force=True)
            )
        )
    )
    audit = await harness.stub().ListConnectionAudit(
        pb.ListConnectionAuditRequest(tenant_id=tenant)
    )
    responses.append(str(audit))

    secrets: set[str] = {f"dev-{app}-client-secret" for app in ("meta", "tiktok")}
    for connection in (page, creator):
        stored = await harness.tokens.get(tenant, connection.id)
        bundle = stored.bundle
        secrets |= {bundle.access_token.reveal(), bundle.refresh_token.reveal()}
        secrets |= {v.reveal() for v in bundle.extra.values()}
    secrets |= {before.bundle.access_token.reveal(), before.bundle.refresh_token.reveal()}
    secrets.discard("")
    assert len(secrets) >= 6
    assert captured.lines, "the flow logged nothing; the test would prove nothing"
    for secret in secrets:
        for line in captured.lines:
            assert secret not in line
        for text in responses:
            assert secret not in text
