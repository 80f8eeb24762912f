"""No secret reaches a log line, an error, a span or a metric.

A whole life of a connection's secrets runs over real gRPC with logging at DEBUG,
spans exported to memory and metrics scraped, including the failure paths (refused
caller, tampered row, KMS outage); then everything captured is searched for each
plaintext, raw and base64-encoded.
"""

from __future__ import annotations

import base64
import io
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, generate_latest

from postd.vault.v1 import vault_pb2, vault_pb2_grpc
from postd_common.logging import JsonFormatter, install_redaction
from postd_common.telemetry import setup_tracing

pytestmark = pytest.mark.integration


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    # Installed before the gRPC server is built, so its interceptor traces into it.
    exporter = InMemorySpanExporter()
    setup_tracing("vault-tests", None, extra_processors=[SimpleSpanProcessor(exporter)])
    yield exporter
    exporter.clear()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    install_redaction()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("vault"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def plaintexts() -> dict[str, str]:
    tag = uuid.uuid4().hex
    return {
        "access": f"AT{tag}access",
        "refresh": f"RT{tag}refresh",
        "new_access": f"AT{tag}renewed",
        "new_refresh": f"RT{tag}rotated",
        "id_token": f"IDT{tag}openid",
        "page_token": f"PG{tag}page",
        "webhook": f"WH{tag}signing",
    }


def forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()]


async def test_a_whole_round_trip_leaks_no_secret(
    spans: InMemorySpanExporter,
    log_output: io.StringIO,
    stub_for: Callable[[str], vault_pb2_grpc.VaultServiceStub],
    local_kms: Any,
    tenant: str,
    pg_pool: Any,
    schema: str,
) -> None:
    secret = plaintexts()
    connectors = stub_for("connectors")
    errors_seen: list[str] = []

    async def expect_failure(call: Any) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call
        errors_seen.append(f"{failed.value.code()} {failed.value.details()}")
        errors_seen.append(repr(failed.value.trailing_metadata()))
        errors_seen.append(repr(failed.value))

    first = vault_pb2.TokenBundle(
        access_token=secret["access"],
        refresh_token=secret["refresh"],
        scopes=["pages_manage_posts"],
        extra={"id_token": secret["id_token"], "page_token": secret["page_token"]},
    )
    await connectors.StoreTokenBundle(
        vault_pb2.StoreTokenBundleRequest(tenant_id=tenant, connection_id="c1", bundle=first)
    )
    got = await connectors.GetTokenBundle(
        vault_pb2.GetTokenBundleRequest(tenant_id=tenant, connection_id="c1")
    )
    assert got.bundle.access_token == secret["access"]  # the one response that carries it
    await connectors.ReplaceTokenBundle(
        vault_pb2.ReplaceTokenBundleRequest(
            tenant_id=tenant,
            connection_id="c1",
            bundle=vault_pb2.TokenBundle(
                access_token=secret["new_access"], refresh_token=secret["new_refresh"]
            ),
            expected_refresh_token_fingerprint=got.info.refresh_token_fingerprint,
        )
    )
    await expect_failure(  # the old fingerprint again: ABORTED
        connectors.ReplaceTokenBundle(
            vault_pb2.ReplaceTokenBundleRequest(
                tenant_id=tenant,
                connection_id="c1",
                bundle=vault_pb2.TokenBundle(access_token=secret["access"]),
                expected_refresh_token_fingerprint=got.info.refresh_token_fingerprint,
            )
        )
    )
    await connectors.StorePlatformSecret(
        vault_pb2.StorePlatformSecretRequest(
            tenant_id=tenant,
            name="c1.webhook",
            kind="webhook_signing_secret",
            value=secret["webhook"].encode(),
            connection_id="c1",
        )
    )
    await connectors.GetPlatformSecret(
        vault_pb2.GetPlatformSecretRequest(tenant_id=tenant, name="c1.webhook")
    )
    await expect_failure(  # a caller that may not read tokens
        stub_for("publisher").GetTokenBundle(
            vault_pb2.GetTokenBundleRequest(tenant_id=tenant, connection_id="c1")
        )
    )
    await expect_failure(  # an invalid request echoing nothing
        connectors.StoreTokenBundle(
            vault_pb2.StoreTokenBundleRequest(
                tenant_id="",
                connection_id="c1",
                bundle=vault_pb2.TokenBundle(access_token=secret["access"]),
            )
        )
    )
    local_kms.down = True
    await expect_failure(
        connectors.GetTokenBundle(
            vault_pb2.GetTokenBundleRequest(tenant_id=tenant, connection_id="c1")
        )
    )
    local_kms.down = False
    await pg_pool.execute(
        f"UPDATE {schema}.secrets SET ciphertext = ciphertext || '\\x01'::bytea"
        " WHERE tenant_id = $1 AND name = 'c1.webhook'",
        tenant,
    )
    await expect_failure(
        connectors.GetPlatformSecret(
            vault_pb2.GetPlatformSecretRequest(tenant_id=tenant, name="c1.webhook")
        )
    )
    await connectors.DeleteConnectionSecrets(
        vault_pb2.DeleteConnectionSecretsRequest(
            tenant_id=tenant, connection_id="c1", reason=f"token={secret['new_refresh']}"
        )
    )

    captured_spans = spans.get_finished_spans()
    assert any("GetTokenBundle" in s.name for s in captured_spans)
    span_text = "\n".join(
        repr(
            (
                s.name,
                dict(s.attributes or {}),
                [(e.name, dict(e.attributes or {})) for e in s.events],
                s.status.description,
            )
        )
        for s in captured_spans
    )
    logs = log_output.getvalue()
    assert "stored secret failed authentication" in logs
    assert "kms unavailable" in logs
    metrics = generate_latest(REGISTRY).decode()
    assert "postd_vault_decrypt_failures_total" in metrics
    audit = "\n".join(
        repr(tuple(r))
        for r in await pg_pool.fetch(
            f"SELECT * FROM {schema}.audit_events WHERE tenant_id = $1", tenant
        )
    )
    assert "[REDACTED]" in audit  # the reason carried a token-shaped value: masked

    places = {
        "logs": logs,
        "spans": span_text,
        "errors": "\n".join(errors_seen),
        "metrics": metrics,
        "audit": audit,
    }
    for where, text in places.items():
        for name, value in secret.items():
            for form in forms(value):
                assert form not in text, f"{name} leaked into {where}"
