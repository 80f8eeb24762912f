"""The capability matrix as data: what each platform accepts, and its limits.

The values live in ``postd_connectors/data/capabilities/<platform>.toml``; this
module only gives them a shape and reads them. Nothing here knows a platform by
name.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from postd_connectors.domain.model import MediaKind


class CapabilityDataError(Exception):
    """A capability file is malformed (a bug in the data, found at start-up)."""


@dataclass(frozen=True)
class MediaConstraints:
    kind: MediaKind
    mime_types: tuple[str, ...] = ()
    max_size_bytes: int = 0
    min_duration: float | None = None
    max_duration: float | None = None
    min_width: int = 0
    max_width: int = 0
    min_height: int = 0
    max_height: int = 0
    min_aspect_ratio: float = 0.0
    max_aspect_ratio: float = 0.0


@dataclass(frozen=True)
class PostFormat:
    format: str
    max_text_length: int = 0
    max_title_length: int = 0
    min_media_count: int = 0
    max_media_count: int = 0
    media: tuple[MediaConstraints, ...] = ()
    supports_link: bool = False
    options: tuple[str, ...] = ()
    required_options: tuple[str, ...] = ()
    option_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    text_required: bool = False
    title_required: bool = False
    # What the platform does with a link in a format that cannot attach one: nothing
    # (a warning) or refuse the post (an error).
    link_in_text_ok: bool = True

    def constraints_for(self, kind: MediaKind) -> MediaConstraints | None:
        for constraint in self.media:
            if constraint.kind is kind:
                return constraint
        return None


@dataclass(frozen=True)
class RateLimit:
    name: str
    scope: str
    limit: int
    window_seconds: float
    description: str


@dataclass(frozen=True)
class PlatformCapabilities:
    platform: str
    display_name: str
    # Words for messages: "Instagram captions are limited to ...".
    text_noun: str
    account_noun: str
    formats: tuple[PostFormat, ...]
    supports_scheduling: bool = False
    supports_edit: bool = False
    supports_delete: bool = False
    supports_analytics: bool = False
    supports_webhooks: bool = False
    supports_refresh: bool = False
    supports_post_lookup: bool = False
    rate_limits: tuple[RateLimit, ...] = ()
    capability_scopes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    default_capabilities: tuple[str, ...] = ("publish",)
    # Scopes every flow asks for (identity), whatever the capabilities.
    base_scopes: tuple[str, ...] = ()
    # Where the platform names its post kinds in the content's options (Business
    # Profile's topic_type), and the format when the option is not given.
    format_option: str = ""
    default_format: str = ""

    @property
    def max_text_length(self) -> int:
        return max((f.max_text_length for f in self.formats), default=0)

    def format(self, name: str) -> PostFormat | None:
        for candidate in self.formats:
            if candidate.format == name:
                return candidate
        return None

    def scopes_for(self, capabilities: Sequence[str]) -> tuple[str, ...]:
        """Scopes the capabilities need, in a stable order (KeyError: unknown one)."""
        wanted = list(capabilities) or list(self.default_capabilities)
        scopes: dict[str, None] = dict.fromkeys(self.base_scopes)
        for capability in wanted:
            scopes.update(dict.fromkeys(self.capability_scopes[capability]))
        return tuple(scopes)

    def narrowed(
        self,
        *,
        max_video_duration: float | None = None,
        publish_remaining: int | None = None,
        options: Mapping[str, tuple[str, ...]] | None = None,
    ) -> PlatformCapabilities:
        """This entry with an account's live limits applied."""
        formats = self.formats
        if options:
            formats = tuple(
                replace(
                    f,
                    option_values={
                        **f.option_values,
                        **{k: v for k, v in options.items() if k in f.options},
                    },
                )
                for f in formats
            )
        if max_video_duration is not None:
            formats = tuple(
                replace(
                    f,
                    media=tuple(
                        replace(m, max_duration=_min_opt(m.max_duration, max_video_duration))
                        if m.kind is MediaKind.VIDEO
                        else m
                        for m in f.media
                    ),
                )
                for f in formats
            )
        limits = self.rate_limits
        if publish_remaining is not None:
            limits = tuple(
                replace(r, description=f"{r.description} ({publish_remaining} left now)")
                if r.name == "publish_per_24h"
                else r
                for r in limits
            )
        return replace(self, formats=formats, rate_limits=limits)


def _min_opt(a: float | None, b: float) -> float:
    return b if a is None else min(a, b)


# --------------------------------------------------------------------------- loading


def _tuple(raw: Any, what: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise CapabilityDataError(f"{what} must be a list of strings")
    return tuple(raw)


def _media(raw: Mapping[str, Any], where: str) -> MediaConstraints:
    try:
        kind = MediaKind(raw["kind"])
    except (KeyError, ValueError) as exc:
        raise CapabilityDataError(f"{where}: media kind missing or unknown") from exc
    return MediaConstraints(
        kind=kind,
        mime_types=_tuple(raw.get("mime_types"), f"{where}.mime_types"),
        max_size_bytes=int(raw.get("max_size_bytes", 0)),
        min_duration=float(raw["min_duration_seconds"]) if "min_duration_seconds" in raw else None,
        max_duration=float(raw["max_duration_seconds"]) if "max_duration_seconds" in raw else None,
        min_width=int(raw.get("min_width", 0)),
        max_width=int(raw.get("max_width", 0)),
        min_height=int(raw.get("min_height", 0)),
        max_height=int(raw.get("max_height", 0)),
        min_aspect_ratio=float(raw.get("min_aspect_ratio", 0.0)),
        max_aspect_ratio=float(raw.get("max_aspect_ratio", 0.0)),
    )


def _format(raw: Mapping[str, Any], where: str) -> PostFormat:
    name = raw.get("format")
    if not isinstance(name, str) or not name:
        raise CapabilityDataError(f"{where}: format name missing")
    values = raw.get("option_values", {})
    return PostFormat(
        format=name,
        max_text_length=int(raw.get("max_text_length", 0)),
        max_title_length=int(raw.get("max_title_length", 0)),
        min_media_count=int(raw.get("min_media_count", 0)),
        max_media_count=int(raw.get("max_media_count", 0)),
        media=tuple(
            _media(m, f"{where}.{name}.media[{i}]") for i, m in enumerate(raw.get("media", []))
        ),
        supports_link=bool(raw.get("supports_link", False)),
        options=_tuple(raw.get("options"), f"{where}.{name}.options"),
        required_options=_tuple(raw.get("required_options"), f"{where}.{name}.required_options"),
        option_values={
            k: _tuple(v, f"{where}.{name}.option_values.{k}") for k, v in values.items()
        },
        text_required=bool(raw.get("text_required", False)),
        title_required=bool(raw.get("title_required", False)),
        link_in_text_ok=bool(raw.get("link_in_text_ok", True)),
    )


def parse_capabilities(raw: Mapping[str, Any], source: str = "<data>") -> PlatformCapabilities:
    try:
        platform = str(raw["platform"])
        display = str(raw["display_name"])
    except KeyError as exc:
        raise CapabilityDataError(f"{source}: {exc.args[0]} missing") from exc
    scopes = raw.get("capability_scopes", {})
    if not isinstance(scopes, dict):
        raise CapabilityDataError(f"{source}: capability_scopes must be a table")
    caps = PlatformCapabilities(
        platform=platform,
        display_name=display,
        text_noun=str(raw.get("text_noun", "posts")),
        account_noun=str(raw.get("account_noun", "account")),
        formats=tuple(
            _format(f, f"{source}.formats[{i}]") for i, f in enumerate(raw.get("formats", []))
        ),
        supports_scheduling=bool(raw.get("supports_scheduling", False)),
        supports_edit=bool(raw.get("supports_edit", False)),
        supports_delete=bool(raw.get("supports_delete", False)),
        supports_analytics=bool(raw.get("supports_analytics", False)),
        supports_webhooks=bool(raw.get("supports_webhooks", False)),
        supports_refresh=bool(raw.get("supports_refresh", False)),
        supports_post_lookup=bool(raw.get("supports_post_lookup", False)),
        rate_limits=tuple(
            RateLimit(
                name=str(r["name"]),
                scope=str(r["scope"]),
                limit=int(r["limit"]),
                window_seconds=float(r["window_seconds"]),
                description=str(r.get("description", "")),
            )
            for r in raw.get("rate_limits", [])
        ),
        capability_scopes={
            k: _tuple(v, f"{source}.capability_scopes.{k}") for k, v in scopes.items()
        },
        default_capabilities=_tuple(
            raw.get("default_capabilities", ["publish"]), f"{source}.default_capabilities"
        ),
        base_scopes=_tuple(raw.get("base_scopes"), f"{source}.base_scopes"),
        format_option=str(raw.get("format_option", "")),
        default_format=str(raw.get("default_format", "")),
    )
    for capability in caps.default_capabilities:
        if capability not in caps.capability_scopes:
            raise CapabilityDataError(f"{source}: default capability {capability} has no scopes")
    return caps


def load_capabilities(directory: Path) -> dict[str, PlatformCapabilities]:
    """Every ``*.toml`` in ``directory``, keyed by platform. Raises CapabilityDataError."""
    found: dict[str, PlatformCapabilities] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise CapabilityDataError(f"{path.name}: {exc}") from exc
        caps = parse_capabilities(raw, path.name)
        found[caps.platform] = caps
    return found
