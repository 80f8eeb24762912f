"""Wiring: adapters to the domain, the servicer, the outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

from postd_common import topics
from postd_common.bootstrap import Runtime, ServiceParts, ServiceSpec
from postd_common.logging import get_logger
from postd_connectors import convert
from postd_connectors.adapters.postgres import OutboxRelay, PostgresConnections
from postd_connectors.adapters.vault import VaultTokenStore
from postd_connectors.config import Settings
from postd_connectors.domain.capabilities import PlatformCapabilities, load_capabilities
from postd_connectors.domain.catalogue import ErrorCatalogue, load_catalogues
from postd_connectors.domain.service import ConnectorsService, ServiceConfig
from postd_connectors.domain.token_cache import TokenCache
from postd_connectors.media.fetch import GuardedFetcher
from postd_connectors.media.preflight import FfprobeInspector
from postd_connectors.platforms.base import Connector, MediaSource
from postd_connectors.platforms.google_business import GoogleBusinessConnector
from postd_connectors.platforms.linkedin import LinkedInConnector
from postd_connectors.platforms.mailchimp import MailchimpConnector
from postd_connectors.platforms.meta import FacebookConnector, InstagramConnector, MetaGraph
from postd_connectors.platforms.tiktok import TikTokConnector
from postd_connectors.ports import TokenStore
from postd_connectors.servicer import POLICY, SERVICE, ConnectorsServicer, register

log = get_logger(__name__)

PACKAGE = Path(__file__).parent
DATA = PACKAGE / "data"

SPEC = ServiceSpec(
    name="connectors",
    schema="connectors",
    migrations=PACKAGE / "migrations",
    topics=(topics.spec(topics.CONNECTION_EVENTS),),
    # No session state is left on pooled connections (refresh_lock closes a connection
    # whose advisory lock it could not release), so releases skip the reset query.
    pool_session_reset=False,
)


@dataclass(frozen=True)
class PlatformData:
    capabilities: Mapping[str, PlatformCapabilities]
    catalogues: Mapping[str, ErrorCatalogue]


def load_platform_data() -> PlatformData:
    """The capability matrix and error catalogues (a malformed file stops start-up)."""
    return PlatformData(
        capabilities=load_capabilities(DATA / "capabilities"),
        catalogues=load_catalogues(DATA / "errors"),
    )


def build_connectors(
    settings: Settings,
    session: aiohttp.ClientSession,
    media: MediaSource,
    data: PlatformData | None = None,
) -> dict[str, Connector]:
    """One connector per platform, each given its app, its data and the HTTP session."""
    data = data or load_platform_data()
    timeout = aiohttp.ClientTimeout(
        total=settings.http_timeout, sock_connect=settings.http_connect_timeout
    )
    meta = MetaGraph(
        settings.apps["meta"],
        session,
        data.catalogues["meta"],
        timeout=timeout,
        poll=settings.poll,
    )
    linkedin = settings.apps["linkedin"]
    tiktok = settings.apps["tiktok"]
    connectors: list[Connector] = [
        FacebookConnector(meta, data.capabilities["facebook"]),
        InstagramConnector(meta, data.capabilities["instagram"]),
        LinkedInConnector(
            linkedin,
            session,
            data.catalogues["linkedin"],
            data.capabilities["linkedin"],
            timeout=timeout,
            media=media,
            version=linkedin.options["version"],
        ),
        TikTokConnector(
            tiktok,
            session,
            data.catalogues["tiktok"],
            data.capabilities["tiktok"],
            timeout=timeout,
            media=media,
            poll=settings.poll,
            chunk_size=int(tiktok.options["chunk_bytes"]),
            max_video_bytes=int(tiktok.options["max_video_bytes"]),
        ),
        GoogleBusinessConnector(
            settings.apps["google"],
            session,
            data.catalogues["google"],
            data.capabilities["google_business"],
            timeout=timeout,
        ),
        MailchimpConnector(
            settings.apps["mailchimp"],
            session,
            data.catalogues["mailchimp"],
            data.capabilities["mailchimp"],
            timeout=timeout,
        ),
    ]
    return {c.platform: c for c in connectors}


def build_service(
    settings: Settings,
    *,
    repo: PostgresConnections,
    tokens: TokenStore,
    session: aiohttp.ClientSession,
) -> ConnectorsService:
    fetcher = GuardedFetcher(
        timeout=settings.media.fetch_timeout,
        allowed_origins=settings.media.dev_allowed_origins,
        allow_http=settings.common.is_development,
    )
    connectors = build_connectors(settings, session, fetcher)
    disabled = frozenset(p for p, c in connectors.items() if c.app in settings.disabled_apps)
    inspector = (
        FfprobeInspector(
            fetcher, max_bytes=settings.media.preflight_max_bytes, ffprobe=settings.media.ffprobe
        )
        if settings.media.preflight
        else None
    )
    return ConnectorsService(
        repo=repo,
        tokens=tokens,
        connectors=connectors,
        config=ServiceConfig(
            redirect_uris=settings.redirect_uris,
            allow_http_redirects=settings.common.is_development,
            refresh_ahead_seconds=settings.refresh_ahead_seconds,
            disabled_platforms=disabled,
            reconnect_url=settings.reconnect_url,
        ),
        inspector=inspector,
        token_cache=TokenCache(settings.token_cache_seconds),
    )


async def _purge_states(repo: PostgresConnections, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(Exception):
            await repo.purge_states(datetime.now(UTC) - timedelta(hours=1))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 600)


async def build(runtime: Runtime, settings: Settings) -> ServiceParts:
    pool = runtime.require_pool()
    producer = runtime.require_producer()
    relay = OutboxRelay(
        pool,
        lambda topic, value, key, headers: producer.produce(topic, value, key=key, headers=headers),
    )
    repo = PostgresConnections(pool, convert.event_encoder(settings.events_topic), relay.wake.set)
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.http_timeout),
        headers={"User-Agent": "POSTD-Connectors/1.0"},
    )
    tokens = VaultTokenStore(runtime.channel("vault", settings.vault_addr))
    service = build_service(settings, repo=repo, tokens=tokens, session=session)
    servicer = ConnectorsServicer(service)

    async def purge(stop: asyncio.Event) -> None:
        await _purge_states(repo, stop)

    return ServiceParts(
        register=[register(servicer)],
        service_names=[SERVICE],
        policy=POLICY,
        tasks=[relay.run, purge],
        on_close=[session.close],
    )
