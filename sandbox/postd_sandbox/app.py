"""The sandbox application: one aiohttp app standing in for every platform host."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from postd_sandbox import control, errors
from postd_sandbox.config import SandboxSettings
from postd_sandbox.errors import ApiError
from postd_sandbox.faults import Fault, FaultKind
from postd_sandbox.keys import HTTP_KEY, PLATFORMS_KEY, SETTINGS_KEY, STATE_KEY
from postd_sandbox.platforms.base import Directory, Platform
from postd_sandbox.platforms.google import GooglePlatform
from postd_sandbox.platforms.linkedin import LinkedInPlatform
from postd_sandbox.platforms.mailchimp import MailchimpPlatform
from postd_sandbox.platforms.meta import MetaPlatform
from postd_sandbox.platforms.registry import PlatformRegistry
from postd_sandbox.platforms.shopify import ShopifyPlatform
from postd_sandbox.platforms.slack import SlackPlatform
from postd_sandbox.platforms.tiktok import TikTokPlatform
from postd_sandbox.state import SandboxState, TokenRecord

logger = logging.getLogger(__name__)

# TikTok's last chunk may be up to 128 MB; leave room for it.
MAX_BODY_BYTES = 160 * 1024 * 1024


def build_platforms(settings: SandboxSettings) -> PlatformRegistry:
    return PlatformRegistry(
        [
            MetaPlatform(settings),
            LinkedInPlatform(settings),
            TikTokPlatform(settings),
            GooglePlatform(settings),
            MailchimpPlatform(settings),
            SlackPlatform(settings),
            ShopifyPlatform(settings),
        ]
    )


async def _request_accounts(
    platform: Platform, request: web.Request, state: SandboxState
) -> tuple[set[str], TokenRecord | None]:
    """External ids a request concerns, so a fault can be aimed at one account."""
    accounts = {segment for segment in request.path.split("/") if segment}
    record = state.tokens.get(await platform.access_token(request))
    if record is not None and record.platform == platform.name:
        accounts |= {record.account, record.subject}
        directory = state.directories.get(platform.name)
        if isinstance(directory, Directory):
            # A page-scoped token concerns its page; a user token all the user's.
            accounts |= directory.accounts_of(record.account)
    accounts |= platform.extra_accounts(request, state)
    return accounts, record


def _drop_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _apply_fault(
    platform: Platform,
    request: web.Request,
    fault: Fault,
    handler: Handler,
    state: SandboxState,
) -> web.StreamResponse:
    logger.info("fault %s (%s) on %s %s", fault.id, fault.kind, request.method, request.path)
    if fault.kind is FaultKind.SLOW:
        await asyncio.sleep((fault.delay_ms or 0) / 1000)
        return await handler(request)
    if fault.kind is FaultKind.TIMEOUT:
        hang = (
            fault.delay_ms / 1000
            if fault.delay_ms is not None
            else state.settings.timeout_hang_seconds
        )
        await asyncio.sleep(hang)
        raise ApiError(errors.TIMEOUT, status=fault.status)
    if fault.kind is FaultKind.LOST_RESPONSE:
        # A refused call's (or a redirect's) answer is lost all the same.
        with contextlib.suppress(ApiError, web.HTTPException):
            await handler(request)
        _drop_connection(request)
        # Ends the request without writing anything: the client sees a dropped
        # connection although the work was done and recorded.
        raise asyncio.CancelledError
    key = (
        fault.error
        if fault.kind is FaultKind.PLATFORM_ERROR
        else platform.fault_error_key(fault.kind, request.path)
    )
    retry_after = fault.retry_after
    if fault.kind is FaultKind.RATE_LIMIT and retry_after is None:
        retry_after = 60
    raise ApiError(key or errors.SERVER_ERROR, status=fault.status, retry_after=retry_after)


@web.middleware
async def platform_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    platform = request.app[PLATFORMS_KEY].for_path(request.path)
    if platform is None:
        return await handler(request)
    state = request.app[STATE_KEY]
    accounts, record = await _request_accounts(platform, request, state)
    fault = state.faults.take(platform.name, accounts, request.path_qs)
    try:
        if fault is not None:
            response = await _apply_fault(platform, request, fault, handler, state)
        else:
            response = await handler(request)
    except ApiError as err:
        response = platform.error_response(request, err)
    except web.HTTPNotFound:
        response = platform.error_response(request, ApiError(errors.NOT_FOUND, path=request.path))
    except web.HTTPMethodNotAllowed:
        response = platform.error_response(
            request, ApiError(errors.NOT_FOUND, status=405, path=request.path)
        )
    except ValueError as exc:
        # A malformed number or date in the request: the platform's bad-parameter error.
        logger.info("bad parameter on %s %s: %s", request.method, request.path, exc)
        response = platform.error_response(
            request, ApiError(errors.INVALID_PARAM, detail=f"invalid parameter: {exc}")
        )
    platform.decorate(request, response, record)
    return response


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[HTTP_KEY] = session
        yield


async def _index(request: web.Request) -> web.Response:
    registry = request.app[PLATFORMS_KEY]
    return web.json_response(
        {
            "service": "postd-sandbox",
            "platforms": {p.name: p.prefix for p in registry},
            "control": "/_sandbox/",
        }
    )


def create_app(settings: SandboxSettings) -> web.Application:
    """The sandbox app: every platform's routes plus the `/_sandbox/` control API."""
    app = web.Application(middlewares=[platform_middleware], client_max_size=MAX_BODY_BYTES)
    registry = build_platforms(settings)
    state = SandboxState(settings)
    registry.seed(state)
    app[SETTINGS_KEY] = settings
    app[PLATFORMS_KEY] = registry
    app[STATE_KEY] = state
    app.cleanup_ctx.append(_http_session)
    app.router.add_get("/", _index)
    app.add_routes(registry.routes())
    app.add_routes(control.routes())
    return app
