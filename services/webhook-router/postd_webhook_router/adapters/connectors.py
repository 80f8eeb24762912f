"""AccountResolver over ``postd.connectors.v1.ConnectorsService.ResolveAccount``."""

from __future__ import annotations

import grpc

from postd.connectors.v1 import connectors_pb2, connectors_pb2_grpc
from postd_webhook_router.domain.model import Route
from postd_webhook_router.ports import ResolverUnavailable


class ConnectorsAccountResolver:
    def __init__(self, channel: grpc.aio.Channel, timeout: float = 2.0) -> None:
        self._stub = connectors_pb2_grpc.ConnectorsServiceStub(channel)
        self._timeout = timeout

    async def resolve(self, platform: str, external_account_id: str) -> list[Route]:
        try:
            reply = await self._stub.ResolveAccount(
                connectors_pb2.ResolveAccountRequest(
                    platform=platform, external_account_id=external_account_id
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise ResolverUnavailable(f"ResolveAccount failed: {exc.code().name}") from exc
        return [Route(m.tenant_id, m.connection_id) for m in reply.matches]
