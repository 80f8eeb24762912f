"""ValidatePost: the capability matrix per target, and the media pre-flight on real
files (fetched through the SSRF guard, measured with ffprobe), before anything is
queued."""

from __future__ import annotations

from typing import Any

import pytest

from postd.common.v1 import common_pb2
from postd.connectors.v1 import connectors_pb2 as pb

pytestmark = pytest.mark.integration


async def _validate(
    harness: Any, tenant: str, targets: list[dict[str, Any]], **content: Any
) -> Any:
    media = [common_pb2.MediaItem(**m) for m in content.pop("media", [])]
    reply = await harness.stub("publisher").ValidatePost(
        pb.ValidatePostRequest(
            tenant_id=tenant,
            targets=[pb.ValidationTarget(**t) for t in targets],
            content=common_pb2.PostContent(media=media, **content),
        )
    )
    return reply.report


def _errors(target: Any) -> list[str]:
    return [
        v.message for v in target.violations if v.severity == common_pb2.VIOLATION_SEVERITY_ERROR
    ]


async def test_over_long_caption_is_rejected_per_target(
    harness: Any, tenant: str, media_server: str
) -> None:
    report = await _validate(
        harness,
        tenant,
        [{"platform": "instagram"}, {"platform": "facebook"}, {"platform": "linkedin"}],
        text="x" * 2412,
        media=[{"url": f"{media_server}/media/square.jpg"}],
    )
    instagram, facebook, linkedin = report.targets
    assert not report.valid
    assert _errors(instagram) == [
        "Instagram captions are limited to 2,200 characters; this one has 2,412."
    ]
    assert instagram.violations[0].field == "content.text"
    assert instagram.violations[0].code == "text_too_long"
    assert facebook.valid
    assert linkedin.valid


async def test_per_target_override_and_counts(harness: Any, tenant: str, media_server: str) -> None:
    images = [{"url": f"{media_server}/media/square.jpg?{i}"} for i in range(11)]
    report = await _validate(
        harness,
        tenant,
        [
            {"platform": "instagram"},
            {"platform": "linkedin", "content": common_pb2.PostContent(text="y" * 3001)},
        ],
        text="hello",
        link="https://example.com",
        media=images,
    )
    instagram, linkedin = report.targets
    assert "Instagram carousels take at most 10 items; this one has 11." in _errors(instagram)
    warnings = [
        v for v in instagram.violations if v.severity == common_pb2.VIOLATION_SEVERITY_WARNING
    ]
    assert [w.code for w in warnings] == ["link_not_supported"]
    assert "LinkedIn posts are limited to 3,000 characters; this one has 3,001." in _errors(
        linkedin
    )


async def test_unsupported_image_is_rejected_by_the_preflight(
    harness: Any, tenant: str, media_server: str
) -> None:
    report = await _validate(
        harness,
        tenant,
        [{"platform": "instagram"}, {"platform": "facebook"}],
        text="A photo",
        # Declared as JPEG: the pre-flight reads the bytes and finds WebP.
        media=[{"url": f"{media_server}/media/photo.webp", "mime_type": "image/jpeg"}],
    )
    instagram, facebook = report.targets
    assert _errors(instagram) == [
        "Instagram accepts JPEG images only; this one is WebP (image/webp)."
    ]
    assert any("WebP" in m for m in _errors(facebook))


async def test_over_long_video_is_rejected_by_the_preflight(
    harness: Any, tenant: str, media_server: str
) -> None:
    report = await _validate(
        harness,
        tenant,
        [{"platform": "instagram"}],
        text="Two clips",
        media=[
            {"url": f"{media_server}/media/clip.mp4"},
            {"url": f"{media_server}/media/long.mp4"},
        ],
    )
    (instagram,) = report.targets
    messages = _errors(instagram)
    assert messages == ["Instagram videos can be at most 1 minute long; this one is 1 min 10 s."]
    assert instagram.violations[0].field == "content.media[1].duration"


async def test_image_dimensions_are_measured(harness: Any, tenant: str, media_server: str) -> None:
    ok = await _validate(
        harness,
        tenant,
        [{"platform": "instagram"}],
        text="4:5",
        media=[{"url": f"{media_server}/media/portrait.jpg"}],
    )
    assert ok.valid
    report = await _validate(
        harness,
        tenant,
        [{"platform": "instagram"}],
        text="PNG",
        media=[{"url": f"{media_server}/media/square.png"}],
    )
    assert _errors(report.targets[0]) == [
        "Instagram accepts JPEG images only; this one is PNG (image/png)."
    ]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/secret.jpg",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/image.jpg",
        "http://[::1]:9/image.jpg",
        "http://localhost:9/image.jpg",
    ],
)
async def test_media_urls_to_internal_addresses_are_refused(
    harness: Any, tenant: str, url: str
) -> None:
    report = await _validate(
        harness, tenant, [{"platform": "facebook"}], text="x", media=[{"url": url}]
    )
    (target,) = report.targets
    assert not target.valid
    (violation,) = target.violations
    assert violation.code == "media_url_refused"
    assert "POSTD does not fetch media" in violation.message


async def test_unknown_target_connection_is_not_found(
    harness: Any, tenant: str, rpc_error: Any
) -> None:
    import grpc

    error = await rpc_error(
        _validate(
            harness, tenant, [{"connection_id": "7e0e1ad4-6f7e-4a53-9a41-1b2f3c4d5e6f"}], text="x"
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_capabilities_narrowed_to_an_instagram_account(harness: Any, tenant: str) -> None:
    result = await harness.connect(tenant, "instagram")
    connection_id = result.connections[0].connection.id
    caps = await harness.stub("publisher").GetCapabilities(
        pb.GetCapabilitiesRequest(tenant_id=tenant, connection_id=connection_id)
    )
    (instagram,) = caps.platforms
    limit = next(r for r in instagram.rate_limits if r.name == "publish_per_24h")
    assert limit.limit == 50
    assert "(50 left now)" in limit.description
    everything = await harness.stub("publisher").GetCapabilities(pb.GetCapabilitiesRequest())
    assert [p.platform for p in everything.platforms] == sorted(
        p.platform for p in everything.platforms
    )
    assert {"facebook", "instagram", "linkedin"} <= {p.platform for p in everything.platforms}
