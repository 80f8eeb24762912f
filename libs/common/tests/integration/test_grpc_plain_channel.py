"""Plain channels with call_metadata: the same identity and trace context as the
interceptors of open_channel, without their per-call cost."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from postd_common import identity
from postd_common.grpcutil import (
    AccessPolicy,
    GrpcServer,
    call_metadata,
    create_server,
    open_plain_channel,
)

pytestmark = pytest.mark.integration

SERVICE = "postd.test.v1.PlainEcho"


def register(seen: list[dict[str, str]]) -> Callable[[grpc.aio.Server], None]:
    async def say(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        seen.append(dict(context.invocation_metadata() or ()))
        return (identity.caller() or "none").encode()

    def add(server: grpc.aio.Server) -> None:
        handler = grpc.unary_unary_rpc_method_handler(say, None, None)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Say": handler}),)
        )

    return add


@pytest.fixture
async def served(verifier_for) -> AsyncIterator[tuple[GrpcServer, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []
    server = create_server(
        service="vault",
        address="127.0.0.1:0",
        register=[register(seen)],
        service_names=[SERVICE],
        verifier=verifier_for("vault"),
        policy=AccessPolicy(default=frozenset({"gateway"})),
    )
    await server.start()
    yield server, seen
    await server.stop(0.5)


async def test_identity_and_trace_context_travel_without_interceptors(served, signer_for) -> None:
    server, seen = served
    tracer = TracerProvider().get_tracer("test")
    async with open_plain_channel(f"127.0.0.1:{server.port}") as channel:
        say = channel.unary_unary(f"/{SERVICE}/Say")
        with tracer.start_as_current_span("caller") as span:
            answer = await say(b"", metadata=call_metadata(signer_for("gateway"), "vault"))
        assert answer == b"gateway"
        trace_id = f"{span.get_span_context().trace_id:032x}"
        assert trace_id in seen[-1]["traceparent"]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await say(b"", metadata=call_metadata(None, "vault"))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await say(b"", metadata=call_metadata(signer_for("publisher"), "vault"))
        assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert trace.get_current_span().get_span_context().is_valid is False


async def test_a_target_of_several_replicas_spreads_calls_round_robin(signer_for) -> None:
    """A gateway in front of several router replicas: one channel, every replica used."""
    seen: list[list[dict[str, str]]] = [[], []]
    servers = [
        create_server(
            service="vault",
            address="127.0.0.1:0",
            register=[register(box)],
            service_names=[SERVICE],
            verifier=None,
        )
        for box in seen
    ]
    for server in servers:
        await server.start()
    try:
        target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
        async with open_plain_channel(target) as channel:
            say = channel.unary_unary(f"/{SERVICE}/Say")
            for _ in range(200):
                await say(b"", metadata=call_metadata(signer_for("gateway"), "vault"))
                if all(len(box) >= 5 for box in seen):
                    break
        assert all(len(box) >= 5 for box in seen), [len(box) for box in seen]
    finally:
        for server in servers:
            await server.stop(0)
