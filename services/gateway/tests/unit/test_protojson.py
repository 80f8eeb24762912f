"""Proto <-> JSON and the schemas derived from the same descriptors agree."""

from __future__ import annotations

import jsonschema_rs
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from postd.common.v1 import common_pb2 as common
from postd.connectors.v1 import connectors_pb2 as cx
from postd.health.v1 import health_pb2 as hp
from postd.publisher.v1 import publisher_pb2 as pub
from postd.webhook_router.v1 import webhook_router_pb2 as wr
from postd_gateway.protojson import SchemaRegistry, enum_names, from_json, to_json


def validator(reg: SchemaRegistry, ref: dict) -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft202012Validator(
        {**ref, "components": {"schemas": reg.components}}, validate_formats=True
    )


def test_enums_timestamps_and_unset_messages():
    connection = cx.Connection(
        id="c1", status=common.CONNECTION_STATUS_EXPIRING_SOON, scopes=["a", "b"]
    )
    connection.expires_at.FromSeconds(1_800_000_000)
    out = to_json(connection)
    assert out["status"] == "expiring_soon"
    assert out["expires_at"] == "2027-01-15T08:00:00Z"
    assert out["last_error"] is None
    assert out["scopes"] == ["a", "b"]
    assert "healthy" in enum_names(common.ConnectionStatus.DESCRIPTOR)


def test_input_round_trip():
    data = {
        "text": "Hi",
        "media": [{"url": "https://x/y.mp4", "kind": "video", "duration": 12.5}],
        "options": {"tiktok.privacy_level": "SELF_ONLY"},
    }
    content = from_json(data, common.PostContent)
    assert content.media[0].kind == common.MEDIA_KIND_VIDEO
    assert content.media[0].duration.seconds == 12
    assert content.media[0].duration.nanos == 500_000_000
    back = to_json(content)
    assert back["media"][0]["duration"] == 12.5
    assert back["options"] == data["options"]
    with pytest.raises(ValueError, match="unknown"):
        from_json({"nope": 1}, common.PostContent)


SAMPLES = [
    cx.RefreshConnectionResponse(
        outcome=cx.REFRESH_OUTCOME_FAILED,
        connection=cx.Connection(id="c", platform="tiktok"),
        error=common.PlatformError(
            category=common.ERROR_CATEGORY_RATE_LIMITED, missing_scopes=["x"]
        ),
    ),
    pub.Post(id="p", jobs=[pub.Job(id="j", state=pub.JOB_STATE_RETRYING)]),
    wr.WebhookEvent(id="e", body=b"\x00\xff", headers=[wr.HttpHeader(name="a", value="b")]),
    hp.GetDashboardResponse(),
    cx.PlatformCapabilities(platform="instagram", formats=[cx.PostFormat(format="reel")]),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: m.DESCRIPTOR.name)
def test_answers_match_their_schema(message):
    reg = SchemaRegistry()
    ref = reg.ref(message.DESCRIPTOR)
    errors = list(validator(reg, ref).iter_errors(to_json(message)))
    assert errors == []


def test_non_finite_doubles_become_null_and_still_validate():
    response = hp.GetDashboardResponse()
    response.token_health.total.current = float("nan")
    reg = SchemaRegistry()
    out = to_json(response)
    assert out["token_health"]["total"]["current"] is None
    assert list(validator(reg, reg.ref(hp.GetDashboardResponse.DESCRIPTOR)).iter_errors(out)) == []


def test_input_schemas_refuse_unknown_fields_and_accept_partial_objects():
    reg = SchemaRegistry()
    schema = validator(reg, reg.ref(common.PostContent.DESCRIPTOR, write=True))
    assert schema.is_valid({"text": "x"})
    assert not schema.is_valid({"text": "x", "colour": "red"})
    assert not schema.is_valid({"media": [{"kind": "hologram"}]})
    stamp = Timestamp()
    assert stamp.ToJsonString() == "1970-01-01T00:00:00Z"
