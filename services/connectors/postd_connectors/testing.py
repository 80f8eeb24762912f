"""Test helpers: an in-memory TokenStore with the vault's semantics, and a way to run
the platform sandbox on a real loopback port.

The in-memory store is a fake of the TokenStore port for unit tests, and stands in
for the vault in integration tests only while ``postd_vault`` has not landed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from postd_common.devinfra import free_port
from postd_common.secrets import Secret
from postd_connectors.domain.model import StoredBundle, TokenBundle
from postd_connectors.ports import TokenConflict, TokenNotFound

_FINGERPRINT_KEY = b"in-memory-token-store"


def _fingerprint(refresh: Secret) -> str:
    if not refresh:
        return ""
    return hmac.new(_FINGERPRINT_KEY, refresh.reveal_bytes(), hashlib.sha256).hexdigest()


@dataclass
class InMemoryTokenStore:
    """TokenStore with the vault's contract: an empty refresh token keeps the stored
    one; replace is a compare-and-swap on version and refresh-token fingerprint."""

    bundles: dict[tuple[str, str], tuple[TokenBundle, int]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def _stored(self, bundle: TokenBundle, version: int) -> StoredBundle:
        return StoredBundle(
            bundle, version, _fingerprint(bundle.refresh_token), bundle.has_refresh_token
        )

    async def store(self, tenant_id: str, connection_id: str, bundle: TokenBundle) -> StoredBundle:
        self.calls.append("store")
        key = (tenant_id, connection_id)
        previous = self.bundles.get(key)
        if previous is not None and not bundle.refresh_token:
            bundle = replace(bundle, refresh_token=previous[0].refresh_token)
        version = previous[1] + 1 if previous else 1
        self.bundles[key] = (bundle, version)
        return self._stored(bundle, version)

    async def get(self, tenant_id: str, connection_id: str) -> StoredBundle:
        self.calls.append("get")
        found = self.bundles.get((tenant_id, connection_id))
        if found is None:
            raise TokenNotFound("no tokens are stored for this connection")
        return self._stored(*found)

    async def replace(
        self,
        tenant_id: str,
        connection_id: str,
        bundle: TokenBundle,
        *,
        expected_version: int = 0,
        expected_fingerprint: str = "",
    ) -> StoredBundle:
        self.calls.append("replace")
        key = (tenant_id, connection_id)
        found = self.bundles.get(key)
        if found is None:
            raise TokenNotFound("no tokens are stored for this connection")
        current, version = found
        if expected_version and version != expected_version:
            raise TokenConflict("the stored tokens changed meanwhile")
        if expected_fingerprint and not hmac.compare_digest(
            _fingerprint(current.refresh_token), expected_fingerprint
        ):
            raise TokenConflict("the stored refresh token changed meanwhile")
        if not bundle.refresh_token:
            bundle = replace(bundle, refresh_token=current.refresh_token)
        self.bundles[key] = (bundle, version + 1)
        return self._stored(bundle, version + 1)

    async def delete(self, tenant_id: str, connection_id: str, reason: str) -> int:
        self.calls.append("delete")
        return 1 if self.bundles.pop((tenant_id, connection_id), None) else 0


@dataclass
class RunningSandbox:
    url: str
    runner: web.AppRunner
    app: web.Application

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_sandbox(**overrides: Any) -> RunningSandbox:
    """The platform sandbox on a free loopback port, with fast processing delays."""
    from postd_sandbox.app import create_app
    from postd_sandbox.config import load_settings

    port = free_port()
    base = load_settings({})
    settings = dataclasses.replace(
        base,
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        **{
            "ig_container_delay_ms": 100,
            "tiktok_processing_delay_ms": 100,
            "timeout_hang_seconds": 5.0,
            **overrides,
        },
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return RunningSandbox(f"http://127.0.0.1:{port}", runner, app)
