"""Checks a post against one platform's capability matrix, in words a person reads.

Every message names the limit and the actual value ("Instagram captions are limited
to 2,200 characters; this one has 2,412."). Invalid content is a result, never an
exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from postd_connectors.domain.capabilities import MediaConstraints, PlatformCapabilities, PostFormat
from postd_connectors.domain.model import MediaItem, MediaKind, PostContent


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Violation:
    field: str
    code: str
    message: str
    severity: Severity = Severity.ERROR


_MIME_NAMES = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WebP",
    "image/heic": "HEIC",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/svg+xml": "SVG",
    "video/mp4": "MP4",
    "video/quicktime": "MOV",
    "video/webm": "WebM",
    "video/x-matroska": "MKV",
    "video/mpeg": "MPEG",
    "application/pdf": "PDF",
}

_KIND_WORDS = {
    MediaKind.IMAGE: ("image", "images"),
    MediaKind.VIDEO: ("video", "videos"),
    MediaKind.GIF: ("GIF", "GIFs"),
    MediaKind.DOCUMENT: ("document", "documents"),
    MediaKind.UNSPECIFIED: ("file", "files"),
}

_FORMAT_WORDS = {
    "text": "text posts",
    "link": "link posts",
    "image": "image posts",
    "video": "video posts",
    "reel": "reels",
    "carousel": "carousels",
    "document": "document posts",
    "event": "event posts",
    "offer": "offer posts",
    "standard": "updates",
    "email_campaign": "email campaigns",
}


def count(n: int) -> str:
    return f"{n:,}"


def human_size(n: int) -> str:
    if n >= 1024**3:
        return f"{n / 1024**3:.3g} GB"
    if n >= 1024**2:
        return f"{n / 1024**2:.3g} MB"
    if n >= 1024:
        return f"{n / 1024:.3g} KB"
    return f"{n} bytes"


def human_duration(seconds: float) -> str:
    seconds = round(seconds, 1)
    if seconds < 60:
        return f"{seconds:g} seconds" if seconds != 1 else "1 second"
    minutes, rest = divmod(round(seconds), 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} hours"
    if rest == 0:
        return f"{minutes} minutes" if minutes != 1 else "1 minute"
    return f"{minutes} min {rest} s"


def mime_name(mime: str) -> str:
    return _MIME_NAMES.get(mime.lower(), mime or "an unknown type")


def _ratio_text(ratio: float) -> str:
    known = {0.8: "4:5", 1.0: "1:1", 1.91: "1.91:1", 0.5625: "9:16", 1.7778: "16:9"}
    for value, name in known.items():
        if abs(ratio - value) < 0.005:
            return name
    return f"{ratio:.2f}:1"


def choose_format(caps: PlatformCapabilities, content: PostContent) -> str:
    """The format a post takes on a platform, from its shape (or an explicit option)."""
    explicit = content.option(caps.platform, "format")
    if explicit:
        return explicit
    if caps.format_option:
        chosen = content.option(caps.platform, caps.format_option).lower()
        return chosen or caps.default_format
    kinds = [m.effective_kind for m in content.media]
    if not kinds:
        return "link" if content.link and caps.format("link") else "text"
    if MediaKind.DOCUMENT in kinds:
        return "document"
    if len(kinds) > 1 and caps.format("carousel"):
        return "carousel"
    if MediaKind.VIDEO in kinds:
        for name in ("video", "reel"):
            if caps.format(name):
                return name
        return "video"
    return "image"


def validate(
    caps: PlatformCapabilities, content: PostContent, prefix: str = "content"
) -> list[Violation]:
    """Every rule ``content`` breaks on this platform, errors first."""
    found: list[Violation] = []
    name = choose_format(caps, content)
    fmt = caps.format(name)
    display = caps.display_name
    if fmt is None:
        accepted = ", ".join(_FORMAT_WORDS.get(f.format, f.format) for f in caps.formats)
        found.append(
            Violation(
                f"{prefix}.media" if content.media else prefix,
                "unsupported_format",
                f"{display} does not accept {_FORMAT_WORDS.get(name, name)}; "
                f"it accepts {accepted}.",
            )
        )
        return found
    found += _text(caps, fmt, content, prefix)
    found += _media_count(caps, fmt, content, prefix)
    for index, item in enumerate(content.media):
        found += _media_item(caps, fmt, item, f"{prefix}.media[{index}]")
    found += _options(caps, fmt, content, prefix)
    return sorted(found, key=lambda v: v.severity is not Severity.ERROR)


def _text(
    caps: PlatformCapabilities, fmt: PostFormat, content: PostContent, prefix: str
) -> list[Violation]:
    out: list[Violation] = []
    display = caps.display_name
    length = len(content.text)
    if fmt.max_text_length and length > fmt.max_text_length:
        out.append(
            Violation(
                f"{prefix}.text",
                "text_too_long",
                f"{display} {caps.text_noun} are limited to {count(fmt.max_text_length)} "
                f"characters; this one has {count(length)}.",
            )
        )
    if fmt.text_required and not content.text.strip():
        out.append(
            Violation(f"{prefix}.text", "text_required", f"{display} needs text for this post.")
        )
    if fmt.max_title_length and len(content.title) > fmt.max_title_length:
        out.append(
            Violation(
                f"{prefix}.title",
                "title_too_long",
                f"{display} titles are limited to {count(fmt.max_title_length)} characters; "
                f"this one has {count(len(content.title))}.",
            )
        )
    if fmt.title_required and not content.title.strip():
        out.append(
            Violation(
                f"{prefix}.title", "title_required", f"{display} needs a title for this post."
            )
        )
    if content.link and not fmt.supports_link:
        out.append(
            Violation(
                f"{prefix}.link",
                "link_not_supported",
                f"{display} cannot attach a link to {_FORMAT_WORDS.get(fmt.format, fmt.format)}; "
                "the link will not be shown.",
                Severity.WARNING if fmt.link_in_text_ok else Severity.ERROR,
            )
        )
    return out


def _media_count(
    caps: PlatformCapabilities, fmt: PostFormat, content: PostContent, prefix: str
) -> list[Violation]:
    n = len(content.media)
    words = _FORMAT_WORDS.get(fmt.format, fmt.format)
    display = caps.display_name
    if fmt.max_media_count == 0 and n:
        return [
            Violation(
                f"{prefix}.media",
                "media_not_supported",
                f"{display} {words} cannot carry media; this one has {n} "
                f"{'item' if n == 1 else 'items'}.",
            )
        ]
    if fmt.max_media_count and n > fmt.max_media_count:
        return [
            Violation(
                f"{prefix}.media",
                "too_many_media",
                f"{display} {words} take at most {fmt.max_media_count} "
                f"{'item' if fmt.max_media_count == 1 else 'items'}; this one has {n}.",
            )
        ]
    if n < fmt.min_media_count:
        return [
            Violation(
                f"{prefix}.media",
                "too_few_media",
                f"{display} {words} need at least {fmt.min_media_count} "
                f"{'item' if fmt.min_media_count == 1 else 'items'}; this one has {n}.",
            )
        ]
    return []


def _media_item(
    caps: PlatformCapabilities, fmt: PostFormat, item: MediaItem, where: str
) -> list[Violation]:
    display = caps.display_name
    kind = item.effective_kind
    one, many = _KIND_WORDS[kind]
    constraint = fmt.constraints_for(kind)
    if constraint is None:
        accepted = " or ".join(_KIND_WORDS[c.kind][1] for c in fmt.media) or "no media"
        if kind is MediaKind.UNSPECIFIED:
            message = (
                f"The type of this file is not known; {display} "
                f"{_FORMAT_WORDS.get(fmt.format, fmt.format)} accept {accepted}."
            )
        else:
            message = (
                f"{display} {_FORMAT_WORDS.get(fmt.format, fmt.format)} do not accept {many}; "
                f"they accept {accepted}."
            )
        return [Violation(where, "unsupported_media_kind", message)]
    return _constraint(display, constraint, item, where, one, many)


def _constraint(
    display: str, c: MediaConstraints, item: MediaItem, where: str, one: str, many: str
) -> list[Violation]:
    out: list[Violation] = []
    if item.mime_type and c.mime_types and item.mime_type.lower() not in c.mime_types:
        names = sorted({mime_name(m) for m in c.mime_types})
        accepted = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
        only = " only" if len(names) == 1 else ""
        out.append(
            Violation(
                f"{where}.mime_type",
                "unsupported_mime_type",
                f"{display} accepts {accepted} {many}{only}; this one is "
                f"{mime_name(item.mime_type)} ({item.mime_type}).",
            )
        )
    if c.max_size_bytes and item.size_bytes > c.max_size_bytes:
        out.append(
            Violation(
                f"{where}.size_bytes",
                "media_too_large",
                f"{display} accepts {many} up to {human_size(c.max_size_bytes)}; this one is "
                f"{human_size(item.size_bytes)}.",
            )
        )
    if item.duration_seconds is not None:
        if c.max_duration is not None and item.duration_seconds > c.max_duration:
            out.append(
                Violation(
                    f"{where}.duration",
                    "video_too_long",
                    f"{display} {many} can be at most {human_duration(c.max_duration)} long; "
                    f"this one is {human_duration(item.duration_seconds)}.",
                )
            )
        if c.min_duration is not None and item.duration_seconds < c.min_duration:
            out.append(
                Violation(
                    f"{where}.duration",
                    "video_too_short",
                    f"{display} {many} must be at least {human_duration(c.min_duration)} long; "
                    f"this one is {human_duration(item.duration_seconds)}.",
                )
            )
    if item.width and item.height:
        if (c.min_width and item.width < c.min_width) or (
            c.min_height and item.height < c.min_height
        ):
            out.append(
                Violation(
                    f"{where}.width",
                    "media_too_small",
                    f"{display} {many} must be at least {c.min_width or 1}x{c.min_height or 1} "
                    f"pixels; this one is {item.width}x{item.height}.",
                )
            )
        if (c.max_width and item.width > c.max_width) or (
            c.max_height and item.height > c.max_height
        ):
            out.append(
                Violation(
                    f"{where}.width",
                    "media_too_big",
                    f"{display} {many} can be at most {c.max_width or '∞'}x{c.max_height or '∞'} "
                    f"pixels; this one is {item.width}x{item.height}.",
                )
            )
        ratio = item.width / item.height
        low, high = c.min_aspect_ratio, c.max_aspect_ratio
        if (low and ratio < low - 1e-3) or (high and ratio > high + 1e-3):
            out.append(
                Violation(
                    f"{where}.width",
                    "aspect_ratio",
                    f"{display} {many} need an aspect ratio between {_ratio_text(low)} and "
                    f"{_ratio_text(high)}; this one is {_ratio_text(ratio)}.",
                )
            )
    return out


def _options(
    caps: PlatformCapabilities, fmt: PostFormat, content: PostContent, prefix: str
) -> list[Violation]:
    out: list[Violation] = []
    display = caps.display_name
    for option in fmt.required_options:
        if not content.option(caps.platform, option):
            out.append(
                Violation(
                    f"{prefix}.options[{caps.platform}.{option}]",
                    "option_required",
                    f"{display} needs the option {caps.platform}.{option} for "
                    f"{_FORMAT_WORDS.get(fmt.format, fmt.format)}.",
                )
            )
    for option, allowed in fmt.option_values.items():
        value = content.option(caps.platform, option)
        if value and value not in allowed:
            out.append(
                Violation(
                    f"{prefix}.options[{caps.platform}.{option}]",
                    "option_invalid",
                    f"{display} accepts {', '.join(allowed)} for {caps.platform}.{option}; "
                    f"got {value!r}.",
                )
            )
    return out
