"""Typed application keys for the sandbox's shared state."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from postd_sandbox.config import SandboxSettings
from postd_sandbox.state import SandboxState

if TYPE_CHECKING:
    from postd_sandbox.platforms.registry import PlatformRegistry

SETTINGS_KEY = web.AppKey("postd_sandbox_settings", SandboxSettings)
STATE_KEY = web.AppKey("postd_sandbox_state", SandboxState)
PLATFORMS_KEY: web.AppKey[PlatformRegistry] = web.AppKey("postd_sandbox_platforms")
# Outbound HTTP (webhook deliveries); opened and closed by the app's cleanup_ctx.
HTTP_KEY = web.AppKey("postd_sandbox_http", aiohttp.ClientSession)
