"""Media pre-flight: what a file really is, learnt before anything is queued.

The file is fetched through the SSRF guard (size- and time-capped), its type is
sniffed from its first bytes (never trusted from a header or an extension), and
images and videos are measured with ``ffprobe`` (Debian's ffmpeg) on a local copy,
with a time limit. The capability matrix then judges the facts.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import replace
from typing import Any

from postd_common.logging import get_logger
from postd_connectors.domain.model import MediaItem, MediaKind
from postd_connectors.domain.validation import Violation, human_size
from postd_connectors.media.fetch import GuardedFetcher, MediaRefused

log = get_logger(__name__)


def sniff(head: bytes) -> str:
    """The MIME type of a file from its first bytes; "" when unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head.startswith(b"BM"):
        return "image/bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"):
            return "image/heic"
        if brand == b"qt  ":
            return "video/quicktime"
        return "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    stripped = head.lstrip()
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in head):
        return "image/svg+xml"
    return ""


def kind_of(mime: str) -> MediaKind:
    if mime == "image/gif":
        return MediaKind.GIF
    if mime.startswith("image/"):
        return MediaKind.IMAGE
    if mime.startswith("video/"):
        return MediaKind.VIDEO
    if mime == "application/pdf":
        return MediaKind.DOCUMENT
    return MediaKind.UNSPECIFIED


_PROBED = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff")


class FfprobeInspector:
    """MediaInspector: fetch (guarded), sniff, measure with ffprobe."""

    def __init__(
        self,
        fetcher: GuardedFetcher,
        *,
        max_bytes: int,
        ffprobe: str = "ffprobe",
        probe_timeout: float = 20.0,
    ) -> None:
        self._fetcher = fetcher
        self._max_bytes = max_bytes
        self._ffprobe = ffprobe
        self._probe_timeout = probe_timeout

    async def inspect(self, item: MediaItem, where: str) -> MediaItem | Violation:
        try:
            fetched = await self._fetcher.fetch(item.url, max_bytes=self._max_bytes)
        except MediaRefused as refused:
            code = {"url_refused": "media_url_refused", "too_large": "media_too_large"}.get(
                refused.code, "media_unreachable"
            )
            return Violation(f"{where}.url", code, refused.reason)
        data = fetched.data
        mime = sniff(data[:64])
        if not mime:
            return Violation(
                f"{where}.mime_type",
                "unsupported_mime_type",
                "This file is not an image or video format POSTD recognises.",
            )
        measured = replace(
            item,
            mime_type=mime,
            kind=kind_of(mime),
            size_bytes=len(data),
        )
        if not (mime in _PROBED or mime.startswith("video/")):
            return measured
        probe = await self._probe(data)
        if probe is None:
            return Violation(
                f"{where}.url",
                "media_unreadable",
                f"This {mime.split('/')[0]} ({human_size(len(data))}) could not be read; "
                "it may be damaged.",
            )
        width, height, duration = probe
        return replace(
            measured,
            width=width or measured.width,
            height=height or measured.height,
            duration_seconds=duration if measured.kind is MediaKind.VIDEO else None,
        )

    async def _probe(self, data: bytes) -> tuple[int, int, float | None] | None:
        fd, path = tempfile.mkstemp(prefix="postd-media-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            process = await asyncio.create_subprocess_exec(
                self._ffprobe,
                "-v",
                "error",
                # Only the local file: a playlist must not make ffprobe fetch anything.
                "-protocol_whitelist",
                "file",
                "-print_format",
                "json",
                "-show_format",
                "-show_streams",
                path,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                out, _ = await asyncio.wait_for(process.communicate(), self._probe_timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
                log.warning("ffprobe timed out")
                return None
            if process.returncode != 0:
                return None
            return _facts(json.loads(out or b"{}"))
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("ffprobe failed", error=type(exc).__name__)
            return None
        finally:
            os.unlink(path)


def _facts(report: dict[str, Any]) -> tuple[int, int, float | None] | None:
    streams = [s for s in report.get("streams", []) if s.get("codec_type") == "video"]
    if not streams:
        return None
    stream = streams[0]
    width, height = int(stream.get("width", 0) or 0), int(stream.get("height", 0) or 0)
    rotation = 0
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            rotation = abs(int(side["rotation"]))
    if rotation in (90, 270):
        width, height = height, width
    raw = (report.get("format") or {}).get("duration") or stream.get("duration")
    try:
        duration = float(raw) if raw is not None else None
    except ValueError:
        duration = None
    return width, height, duration
