"""The gRPC server factory: health, identity, allow-lists, domain error mapping."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from postd_common import errors, identity
from postd_common.grpcutil import (
    MD_ERROR_CODE,
    MD_ERROR_FIELD,
    AccessPolicy,
    GrpcServer,
    check_health,
    create_server,
    map_domain_errors,
    open_channel,
)

pytestmark = pytest.mark.integration

SERVICE = "postd.test.v1.EchoService"


class Echo:
    """A servicer written the way services write theirs."""

    @map_domain_errors
    async def Say(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        if request == b"missing":
            raise errors.NotFound("no such thing")
        if request == b"bad":
            raise errors.InvalidArgument("text is too long", field="content.text")
        return b"caller=" + (identity.caller() or "none").encode()

    @map_domain_errors
    async def Secret(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return b"ok"


def register(server: grpc.aio.Server) -> None:
    echo = Echo()
    identity_ser = None
    handlers = {
        "Say": grpc.unary_unary_rpc_method_handler(echo.Say, identity_ser, identity_ser),
        "Secret": grpc.unary_unary_rpc_method_handler(echo.Secret, identity_ser, identity_ser),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))


@pytest.fixture
async def server(
    verifier_for: Callable[[str], identity.IdentityVerifier],
) -> AsyncIterator[GrpcServer]:
    srv = create_server(
        service="vault",
        address="127.0.0.1:0",
        register=[register],
        service_names=[SERVICE],
        verifier=verifier_for("vault"),
        policy=AccessPolicy(methods={f"/{SERVICE}/Secret": frozenset({"connectors"})}),
    )
    await srv.start()
    yield srv
    await srv.stop(0.5)


def call(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable:
    return channel.unary_unary(f"/{SERVICE}/{method}")


async def test_health_and_identity(server: GrpcServer, signer_for) -> None:
    target = f"127.0.0.1:{server.port}"
    assert await check_health(target)
    assert await check_health(target, SERVICE)

    async with open_channel(target, signer=signer_for("publisher"), audience="vault") as ch:
        assert await call(ch, "Say")(b"hi") == b"caller=publisher"
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call(ch, "Secret")(b"hi")
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "publisher" in (denied.value.details() or "")

    async with open_channel(target, signer=signer_for("connectors"), audience="vault") as ch:
        assert await call(ch, "Secret")(b"hi") == b"ok"

    # A token for another audience, and no token at all, are refused.
    async with open_channel(target, signer=signer_for("connectors"), audience="health") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await call(ch, "Say")(b"hi")
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with grpc.aio.insecure_channel(target) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as anon:
            await call(ch, "Say")(b"hi")
        assert anon.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Probes need no identity.
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_domain_errors_become_status_codes_with_details(
    server: GrpcServer, signer_for
) -> None:
    target = f"127.0.0.1:{server.port}"
    async with open_channel(target, signer=signer_for("gateway"), audience="vault") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call(ch, "Say")(b"missing")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert missing.value.details() == "no such thing"
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await call(ch, "Say")(b"bad")
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        trailing = dict(bad.value.trailing_metadata() or ())
        assert trailing[MD_ERROR_CODE] == "invalid_argument"
        assert trailing[MD_ERROR_FIELD] == "content.text"


async def test_graceful_stop_reports_not_serving(verifier_for) -> None:
    srv = create_server(
        service="vault",
        address="127.0.0.1:0",
        register=[register],
        service_names=[SERVICE],
        verifier=verifier_for("vault"),
    )
    await srv.start()
    target = f"127.0.0.1:{srv.port}"
    assert await check_health(target)
    await srv.health.enter_graceful_shutdown()
    assert not await check_health(target)
    await srv.server.stop(0.5)


async def test_refused_verified_callers_are_reported_to_the_hook(verifier_for, signer_for) -> None:
    refused: list[tuple[str, str, bytes]] = []

    async def on_refused(method: str, caller: str, request: bytes) -> None:
        refused.append((method, caller, request))

    srv = create_server(
        service="vault",
        address="127.0.0.1:0",
        register=[register],
        service_names=[SERVICE],
        verifier=verifier_for("vault"),
        policy=AccessPolicy(methods={f"/{SERVICE}/Secret": frozenset({"connectors"})}),
        on_refused=on_refused,
    )
    await srv.start()
    target = f"127.0.0.1:{srv.port}"
    try:
        async with open_channel(target, signer=signer_for("publisher"), audience="vault") as ch:
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await call(ch, "Secret")(b"ask")
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert await call(ch, "Say")(b"hi") == b"caller=publisher"  # allowed: no report
        async with grpc.aio.insecure_channel(target) as ch:
            with pytest.raises(grpc.aio.AioRpcError):
                await call(ch, "Secret")(b"anonymous")  # unauthenticated: not reported
    finally:
        await srv.stop(0.5)
    assert refused == [(f"/{SERVICE}/Secret", "publisher", b"ask")]
