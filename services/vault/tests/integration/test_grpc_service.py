"""The vault over real gRPC: identities from the test key directory, the access policy,
and domain errors as status codes with details a caller can act on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from postd.vault.v1 import vault_pb2, vault_pb2_grpc
from postd_common.grpcutil import MD_ERROR_CODE, MD_RETRY_AFTER

pytestmark = pytest.mark.integration

Stub = vault_pb2_grpc.VaultServiceStub


def token_bundle(access: str = "at-grpc", refresh: str = "rt-grpc") -> vault_pb2.TokenBundle:
    expires = Timestamp(seconds=1_900_000_000)
    return vault_pb2.TokenBundle(
        access_token=access,
        refresh_token=refresh,
        token_type="Bearer",
        expires_at=expires,
        scopes=["w_member_social"],
        extra={"id_token": "idt-grpc"},
    )


async def status_of(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value


async def test_connectors_store_and_get_a_bundle(
    stub_for: Callable[[str], Stub], tenant: str
) -> None:
    connectors = stub_for("connectors")
    stored = await connectors.StoreTokenBundle(
        vault_pb2.StoreTokenBundleRequest(
            tenant_id=tenant, connection_id="li-1", bundle=token_bundle()
        )
    )
    assert stored.key_version == "v1"
    assert stored.info.version == 1
    assert stored.info.has_refresh_token
    assert stored.info.scopes == ["w_member_social"]
    got = await connectors.GetTokenBundle(
        vault_pb2.GetTokenBundleRequest(tenant_id=tenant, connection_id="li-1")
    )
    assert got.bundle == token_bundle()
    assert got.info.refresh_token_fingerprint == stored.info.refresh_token_fingerprint

    replaced = await connectors.ReplaceTokenBundle(
        vault_pb2.ReplaceTokenBundleRequest(
            tenant_id=tenant,
            connection_id="li-1",
            bundle=token_bundle("at-2", ""),
            expected_refresh_token_fingerprint=got.info.refresh_token_fingerprint,
            expected_version=got.info.version,
        )
    )
    assert replaced.refresh_token_kept
    assert replaced.info.version == 2
    stale = await status_of(
        connectors.ReplaceTokenBundle(
            vault_pb2.ReplaceTokenBundleRequest(
                tenant_id=tenant, connection_id="li-1", bundle=token_bundle(), expected_version=1
            )
        )
    )
    assert stale.code() == grpc.StatusCode.ABORTED
    assert "someone else refreshed first" in (stale.details() or "")


async def test_only_connectors_may_get_a_token_bundle(
    stub_for: Callable[[str], Stub], tenant: str
) -> None:
    await stub_for("connectors").StoreTokenBundle(
        vault_pb2.StoreTokenBundleRequest(
            tenant_id=tenant, connection_id="c", bundle=token_bundle()
        )
    )
    request = vault_pb2.GetTokenBundleRequest(tenant_id=tenant, connection_id="c")
    callers = ("publisher", "webhook-router", "gateway", "health", "operator")
    for caller in callers:
        refused = await status_of(stub_for(caller).GetTokenBundle(request))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED, caller
        assert "at-grpc" not in (refused.details() or "")
    # Each refusal is audited with who asked for what.
    audit = await stub_for("operator").ListAuditEvents(
        vault_pb2.ListAuditEventsRequest(
            tenant_id=tenant, actions=[vault_pb2.AUDIT_ACTION_ACCESS_DENIED]
        )
    )
    assert sorted((e.actor, e.connection_id, e.success) for e in audit.events) == sorted(
        (caller, "c", False) for caller in callers
    )
    assert {e.detail for e in audit.events} == {"PERMISSION_DENIED GetTokenBundle"}


async def test_a_caller_without_identity_is_unauthenticated(grpc_vault: Any, tenant: str) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_vault.port}") as channel:
        refused = await status_of(
            vault_pb2_grpc.VaultServiceStub(channel).GetTokenBundle(
                vault_pb2.GetTokenBundleRequest(tenant_id=tenant, connection_id="c")
            )
        )
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_platform_secrets_for_webhook_router_but_not_token_bundles(
    stub_for: Callable[[str], Stub], tenant: str
) -> None:
    router = stub_for("webhook-router")
    await router.StorePlatformSecret(
        vault_pb2.StorePlatformSecretRequest(
            tenant_id=tenant, name="mailchimp.path", kind="webhook_path_secret", value=b"p4th"
        )
    )
    got = await router.GetPlatformSecret(
        vault_pb2.GetPlatformSecretRequest(tenant_id=tenant, name="mailchimp.path")
    )
    assert (got.value, got.kind, got.version) == (b"p4th", "webhook_path_secret", 1)
    refused = await status_of(
        router.StoreTokenBundle(
            vault_pb2.StoreTokenBundleRequest(
                tenant_id=tenant, connection_id="c", bundle=token_bundle()
            )
        )
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_errors_are_status_codes_callers_can_act_on(
    stub_for: Callable[[str], Stub], tenant: str, pg_pool: Any, schema: str
) -> None:
    connectors = stub_for("connectors")
    missing = await status_of(
        connectors.GetTokenBundle(
            vault_pb2.GetTokenBundleRequest(tenant_id=tenant, connection_id="nope")
        )
    )
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    invalid = await status_of(
        connectors.StoreTokenBundle(
            vault_pb2.StoreTokenBundleRequest(tenant_id=tenant, connection_id="c")
        )
    )
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "access_token" in (invalid.details() or "")

    await connectors.StoreTokenBundle(
        vault_pb2.StoreTokenBundleRequest(
            tenant_id=tenant, connection_id="c", bundle=token_bundle()
        )
    )
    await pg_pool.execute(
        f"UPDATE {schema}.secrets SET ciphertext = ciphertext || '\\x00'::bytea"
        " WHERE tenant_id = $1",
        tenant,
    )
    lost = await status_of(
        connectors.GetTokenBundle(
            vault_pb2.GetTokenBundleRequest(tenant_id=tenant, connection_id="c")
        )
    )
    assert lost.code() == grpc.StatusCode.DATA_LOSS
    assert dict(lost.trailing_metadata() or ())[MD_ERROR_CODE] == "data_loss"
    assert "at-grpc" not in (lost.details() or "")


async def test_a_kms_outage_is_unavailable_with_retry_advice(
    stub_for: Callable[[str], Stub], local_kms: Any, tenant: str
) -> None:
    local_kms.down = True
    try:
        down = await status_of(
            stub_for("connectors").StoreTokenBundle(
                vault_pb2.StoreTokenBundleRequest(
                    tenant_id=tenant, connection_id="c", bundle=token_bundle()
                )
            )
        )
    finally:
        local_kms.down = False
    assert down.code() == grpc.StatusCode.UNAVAILABLE
    assert dict(down.trailing_metadata() or ())[MD_RETRY_AFTER] == "3"
    assert "nothing was written" in (down.details() or "")


async def test_operator_manages_keys_and_reads_no_secret(
    stub_for: Callable[[str], Stub], tenant: str
) -> None:
    await stub_for("connectors").StoreTokenBundle(
        vault_pb2.StoreTokenBundleRequest(
            tenant_id=tenant, connection_id="c", bundle=token_bundle()
        )
    )
    operator = stub_for("operator")
    rotated = await operator.RotateKey(vault_pb2.RotateKeyRequest(reason="quarterly"))
    assert (rotated.primary.key_version, rotated.previous.key_version) == ("v2", "v1")
    assert rotated.primary.primary
    assert not rotated.previous.primary

    status = await operator.GetRotationStatus(vault_pb2.GetRotationStatusRequest())
    assert status.state == vault_pb2.REWRAP_STATE_PENDING
    assert (status.primary_key_version, status.remaining) == ("v2", status.total)

    in_use = await status_of(
        operator.DisableKeyVersion(vault_pb2.DisableKeyVersionRequest(key_version="v1"))
    )
    assert in_use.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"still wraps {status.total} data keys" in (in_use.details() or "")
    primary = await status_of(
        operator.DisableKeyVersion(vault_pb2.DisableKeyVersionRequest(key_version="v2"))
    )
    assert primary.code() == grpc.StatusCode.FAILED_PRECONDITION
    unknown = await status_of(
        operator.DisableKeyVersion(vault_pb2.DisableKeyVersionRequest(key_version="v9"))
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND

    run = await operator.RunRewrap(vault_pb2.RunRewrapRequest(batch_size=1))
    assert run.complete
    assert run.rewrapped == status.total
    assert run.batches == status.total
    disabled = await operator.DisableKeyVersion(
        vault_pb2.DisableKeyVersionRequest(key_version="1", reason="rotated")
    )
    assert disabled.key_version.state == vault_pb2.KEY_VERSION_STATE_DISABLED
    versions = await operator.ListKeyVersions(vault_pb2.ListKeyVersionsRequest(page_size=1))
    assert [v.key_version for v in versions.key_versions] == ["v2"]
    rest = await operator.ListKeyVersions(
        vault_pb2.ListKeyVersionsRequest(page_token=versions.next_page_token)
    )
    assert [v.key_version for v in rest.key_versions] == ["v1"]
    assert not rest.next_page_token

    refused = await status_of(
        operator.GetTokenBundle(
            vault_pb2.GetTokenBundleRequest(tenant_id=tenant, connection_id="c")
        )
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    for caller in ("connectors", "publisher"):
        denied = await status_of(stub_for(caller).RotateKey(vault_pb2.RotateKeyRequest()))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED

    audit = await operator.ListAuditEvents(
        vault_pb2.ListAuditEventsRequest(
            actions=[vault_pb2.AUDIT_ACTION_ROTATE_KEY, vault_pb2.AUDIT_ACTION_DISABLE_KEY_VERSION]
        )
    )
    assert [(e.action, e.actor, e.key_version) for e in audit.events] == [
        (vault_pb2.AUDIT_ACTION_DISABLE_KEY_VERSION, "operator", "v1"),
        (vault_pb2.AUDIT_ACTION_ROTATE_KEY, "operator", "v2"),
    ]


async def test_connectors_list_audit_events_of_one_tenant_only(
    stub_for: Callable[[str], Stub], tenant: str
) -> None:
    connectors = stub_for("connectors")
    await connectors.StoreTokenBundle(
        vault_pb2.StoreTokenBundleRequest(
            tenant_id=tenant, connection_id="c", bundle=token_bundle()
        )
    )
    mine = await connectors.ListAuditEvents(vault_pb2.ListAuditEventsRequest(tenant_id=tenant))
    assert [e.action for e in mine.events] == [vault_pb2.AUDIT_ACTION_STORE_TOKEN_BUNDLE]
    everyone = await status_of(connectors.ListAuditEvents(vault_pb2.ListAuditEventsRequest()))
    assert everyone.code() == grpc.StatusCode.PERMISSION_DENIED
