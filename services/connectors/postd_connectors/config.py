"""Connectors settings: the only module that reads the environment.

Per platform app (meta, linkedin, tiktok, google, mailchimp): ``POSTD_<APP>_CLIENT_ID``
and ``POSTD_<APP>_CLIENT_SECRET``, and one base URL per host the app talks to
(``POSTD_META_GRAPH_URL``, ``POSTD_LINKEDIN_API_URL``, ...). With no credentials the
app talks to the platform sandbox (``POSTD_SANDBOX_URL``) with the sandbox's
development credentials, which is allowed in development and test only; in staging
and production such a platform is disabled. ``POSTD_SANDBOX_PLATFORMS`` (a list, or
``all``; development only) sends apps to the sandbox even with credentials set, as
``make up`` does with the development credentials it generates for both sides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from postd_common import topics
from postd_common.config import EnvReader
from postd_common.logging import register_secret
from postd_common.secrets import Secret
from postd_common.settings import CommonSettings, load_common, service_addr
from postd_connectors.platforms.app import AppConfig, PollSettings

DEFAULT_SANDBOX_URL: Final = "http://127.0.0.1:8090"

# host name -> (production base URL, path of its stand-in on the sandbox)
APP_HOSTS: Final[Mapping[str, Mapping[str, tuple[str, str]]]] = {
    "meta": {
        "www": ("https://www.facebook.com", "/meta/www"),
        "graph": ("https://graph.facebook.com", "/meta/graph"),
    },
    "linkedin": {
        "www": ("https://www.linkedin.com", "/linkedin/www"),
        "api": ("https://api.linkedin.com", "/linkedin/api"),
    },
    "tiktok": {
        "www": ("https://www.tiktok.com", "/tiktok/www"),
        "api": ("https://open.tiktokapis.com", "/tiktok/open"),
    },
    "google": {
        "accounts": ("https://accounts.google.com", "/google/accounts"),
        "oauth2": ("https://oauth2.googleapis.com", "/google/oauth2"),
        "userinfo": ("https://www.googleapis.com/oauth2", "/google/oauth2"),
        "mybusiness": ("https://mybusiness.googleapis.com", "/google/mybusiness"),
        "account_management": (
            "https://mybusinessaccountmanagement.googleapis.com",
            "/google/mybusinessaccountmanagement",
        ),
        "business_information": (
            "https://mybusinessbusinessinformation.googleapis.com",
            "/google/mybusinessbusinessinformation",
        ),
        "performance": (
            "https://businessprofileperformance.googleapis.com",
            "/google/businessprofileperformance",
        ),
    },
    "mailchimp": {
        "login": ("https://login.mailchimp.com", "/mailchimp/login"),
    },
}


@dataclass(frozen=True)
class MediaSettings:
    fetch_timeout: float = 60.0
    preflight: bool = True
    preflight_max_bytes: int = 300 * 1024 * 1024
    ffprobe: str = "ffprobe"
    # Development only: origins exempted from the private-address check.
    dev_allowed_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    common: CommonSettings
    vault_addr: str
    sandbox_url: str
    apps: Mapping[str, AppConfig]
    disabled_apps: frozenset[str]
    redirect_uris: tuple[str, ...] = ()
    http_timeout: float = 20.0
    http_connect_timeout: float = 5.0
    poll: PollSettings = field(default_factory=PollSettings)
    media: MediaSettings = field(default_factory=MediaSettings)
    events_topic: str = topics.CONNECTION_EVENTS
    reconnect_url: str = "/v1/connect/{platform}?reconnect={connection_id}"
    refresh_ahead_seconds: float = 300.0
    # How long a token bundle read from the vault may serve while its connection's row
    # is unchanged (0: read the vault on every call); see domain/token_cache.py.
    token_cache_seconds: float = 30.0


def default_linkedin_version(now: datetime | None = None) -> str:
    """Two months back: LinkedIn serves each monthly version for about a year, so a
    recent one is always live. Pin POSTD_LINKEDIN_VERSION in production."""
    moment = now or datetime.now(UTC)
    year, month = moment.year, moment.month - 2
    if month <= 0:
        year, month = year - 1, month + 12
    return f"{year:04d}{month:02d}"


def _apps(
    env: EnvReader, sandbox_url: str, development: bool
) -> tuple[dict[str, AppConfig], set[str]]:
    apps: dict[str, AppConfig] = {}
    disabled: set[str] = set()
    # Apps that talk to the sandbox even with credentials set: `make up` generates
    # development credentials and hands the same ones to the sandbox.
    forced_sandbox = {p.lower() for p in env.items("POSTD_SANDBOX_PLATFORMS")}
    for name, hosts in APP_HOSTS.items():
        upper = name.upper()
        client_id = env.text(f"POSTD_{upper}_CLIENT_ID")
        secret = env.secret(f"POSTD_{upper}_CLIENT_SECRET")
        if bool(client_id) != bool(secret):
            env.problems.append(
                f"POSTD_{upper}_CLIENT_ID and POSTD_{upper}_CLIENT_SECRET must be set together"
            )
        real = bool(client_id and secret) and not ({name, "all"} & forced_sandbox)
        if not (client_id and secret):
            client_id, secret = f"dev-{name}-client-id", Secret(f"dev-{name}-client-secret")
            if not development:
                disabled.add(name)
        elif not real and not development:
            env.problems.append(f"POSTD_SANDBOX_PLATFORMS may name {name} only in development")
        register_secret(secret)
        urls = {
            host: env.text(
                f"POSTD_{upper}_{host.upper()}_URL",
                production if real else sandbox_url.rstrip("/") + sandbox_path,
            ).rstrip("/")
            for host, (production, sandbox_path) in hosts.items()
        }
        options: dict[str, str] = {}
        if name == "meta":
            options["graph_version"] = env.text("POSTD_META_GRAPH_VERSION", "v23.0")
        if name == "linkedin":
            options["version"] = env.text("POSTD_LINKEDIN_VERSION", default_linkedin_version())
        if name == "tiktok":
            options["chunk_bytes"] = str(
                env.integer("POSTD_TIKTOK_CHUNK_BYTES", 10 * 1024 * 1024, minimum=5 * 1024 * 1024)
            )
            options["max_video_bytes"] = str(
                env.integer("POSTD_TIKTOK_MAX_VIDEO_BYTES", 512 * 1024 * 1024, minimum=1024)
            )
        apps[name] = AppConfig(
            name=name,
            client_id=client_id,
            client_secret=secret,
            urls=urls,
            sandbox=not real,
            options=options,
        )
    return apps, disabled


def load_settings(environ: Mapping[str, str]) -> Settings:
    env = EnvReader(environ)
    common = load_common(env, "connectors")
    sandbox_url = env.text("POSTD_SANDBOX_URL", DEFAULT_SANDBOX_URL).rstrip("/")
    apps, disabled = _apps(env, sandbox_url, common.is_development)
    allow_sandbox = env.flag("POSTD_MEDIA_ALLOW_SANDBOX", False)
    dev_origins = list(env.items("POSTD_MEDIA_DEV_ALLOWED_ORIGINS"))
    if allow_sandbox:
        dev_origins.append(sandbox_url)
    if dev_origins and not common.is_development:
        env.problems.append(
            "POSTD_MEDIA_ALLOW_SANDBOX / POSTD_MEDIA_DEV_ALLOWED_ORIGINS are for development "
            "only; unset them outside POSTD_ENV=development or test"
        )
        dev_origins = []
    token_cache_seconds = env.number("POSTD_CONNECTORS_TOKEN_CACHE_SECONDS", 30.0, minimum=0.0)
    if token_cache_seconds > 300:
        # It bounds how long tokens shredded in the vault behind connectors' back serve.
        env.problems.append("POSTD_CONNECTORS_TOKEN_CACHE_SECONDS must be at most 300")
    settings = Settings(
        common=common,
        vault_addr=service_addr(env, "vault"),
        sandbox_url=sandbox_url,
        apps=apps,
        disabled_apps=frozenset(disabled),
        redirect_uris=env.items("POSTD_OAUTH_REDIRECT_URIS"),
        http_timeout=env.number("POSTD_CONNECTORS_HTTP_TIMEOUT", 20.0, minimum=0.1),
        http_connect_timeout=env.number("POSTD_CONNECTORS_HTTP_CONNECT_TIMEOUT", 5.0, minimum=0.1),
        poll=PollSettings(
            interval=env.number("POSTD_CONNECTORS_POLL_INTERVAL", 2.0, minimum=0.01),
            budget=env.number("POSTD_CONNECTORS_POLL_BUDGET", 120.0, minimum=0.0),
        ),
        media=MediaSettings(
            fetch_timeout=env.number("POSTD_MEDIA_FETCH_TIMEOUT", 60.0, minimum=1.0),
            preflight=env.flag("POSTD_MEDIA_PREFLIGHT", True),
            preflight_max_bytes=env.integer(
                "POSTD_MEDIA_PREFLIGHT_MAX_BYTES", 300 * 1024 * 1024, minimum=1024
            ),
            ffprobe=env.text("POSTD_FFPROBE", "ffprobe"),
            dev_allowed_origins=tuple(dev_origins),
        ),
        events_topic=env.text("POSTD_CONNECTION_EVENTS_TOPIC", topics.CONNECTION_EVENTS),
        reconnect_url=env.text(
            "POSTD_RECONNECT_URL", "/v1/connect/{platform}?reconnect={connection_id}"
        ),
        refresh_ahead_seconds=env.number("POSTD_REFRESH_AHEAD_SECONDS", 300.0, minimum=0.0),
        token_cache_seconds=token_cache_seconds,
    )
    env.check()
    return settings
