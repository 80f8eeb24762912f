"""Content fingerprints: how a post is recognised on a platform without an id."""

from __future__ import annotations

import hashlib
import unicodedata


def normalize(text: str) -> str:
    """What survives a platform's handling: NFC, trimmed, whitespace runs collapsed."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_fingerprint(text: str, link: str = "") -> str:
    """A stable hash of what a post shows (its text, and its link where the platform
    keeps one), comparable with the same hash of a post read back from the platform."""
    material = normalize(text) + "\x1f" + link.strip()
    return "fp1:" + hashlib.sha256(material.encode()).hexdigest()[:40]
