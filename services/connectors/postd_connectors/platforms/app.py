"""A platform app registration as connectors use it (read by config.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from postd_common.secrets import Secret


@dataclass(frozen=True)
class AppConfig:
    """Client credentials and base URLs of one platform app ("meta", "linkedin", ...).

    ``sandbox`` is true when no real credentials are configured and the URLs point
    at the platform sandbox."""

    name: str
    client_id: str
    client_secret: Secret
    urls: Mapping[str, str]
    sandbox: bool = True
    options: Mapping[str, str] = field(default_factory=dict)

    def url(self, host: str, path: str = "") -> str:
        return self.urls[host].rstrip("/") + path


@dataclass(frozen=True)
class PollSettings:
    """How asynchronous publishes are watched (Instagram containers, TikTok status)."""

    interval: float = 2.0
    budget: float = 120.0
