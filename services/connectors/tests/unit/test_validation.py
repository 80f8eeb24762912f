"""Capability validation in words a person reads."""

from __future__ import annotations

from postd_connectors.app import load_platform_data
from postd_connectors.domain.model import MediaItem, MediaKind, PostContent
from postd_connectors.domain.validation import Severity, choose_format, human_duration, validate

CAPS = load_platform_data().capabilities


def messages(platform: str, content: PostContent) -> list[str]:
    return [v.message for v in validate(CAPS[platform], content) if v.severity is Severity.ERROR]


def test_caption_limit_message() -> None:
    content = PostContent(text="a" * 2412, media=(MediaItem("https://x/a.jpg", MediaKind.IMAGE),))
    assert messages("instagram", content) == [
        "Instagram captions are limited to 2,200 characters; this one has 2,412."
    ]


def test_format_follows_the_shape_of_the_post() -> None:
    image = MediaItem("https://x/a.jpg", MediaKind.IMAGE)
    video = MediaItem("https://x/a.mp4", MediaKind.VIDEO)
    assert choose_format(CAPS["instagram"], PostContent(media=(image,))) == "image"
    assert choose_format(CAPS["instagram"], PostContent(media=(image, image))) == "carousel"
    assert choose_format(CAPS["instagram"], PostContent(media=(video,))) == "reel"
    assert choose_format(CAPS["linkedin"], PostContent(text="t", link="https://x")) == "link"
    assert choose_format(CAPS["facebook"], PostContent(text="t")) == "text"


def test_instagram_needs_media() -> None:
    found = messages("instagram", PostContent(text="just words"))
    assert found == [
        "Instagram does not accept text posts; it accepts image posts, carousels, reels."
    ]


def test_media_constraints_name_the_limit_and_the_value() -> None:
    big = MediaItem(
        "https://x/a.jpg",
        MediaKind.IMAGE,
        mime_type="image/jpeg",
        size_bytes=9 * 1024 * 1024,
        width=1080,
        height=1080,
    )
    assert messages("instagram", PostContent(media=(big,))) == [
        "Instagram accepts images up to 8 MB; this one is 9 MB."
    ]
    wide = MediaItem(
        "https://x/a.jpg", MediaKind.IMAGE, mime_type="image/jpeg", width=1080, height=400
    )
    assert messages("instagram", PostContent(media=(wide,))) == [
        "Instagram images need an aspect ratio between 4:5 and 1.91:1; this one is 2.70:1."
    ]
    short = MediaItem(
        "https://x/a.mp4", MediaKind.VIDEO, mime_type="video/mp4", duration_seconds=1.5
    )
    assert messages("instagram", PostContent(media=(short,))) == [
        "Instagram videos must be at least 3 seconds long; this one is 1.5 seconds."
    ]


def test_durations_read_naturally() -> None:
    assert human_duration(60) == "1 minute"
    assert human_duration(70) == "1 min 10 s"
    assert human_duration(600) == "10 minutes"
    assert human_duration(4.25) == "4.2 seconds"
