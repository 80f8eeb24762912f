"""The vault on real PostgreSQL and the local keyring: storing, reading, replacing and
shredding secrets, and what happens to a row that was tampered with or moved."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import REGISTRY

from postd_common import db, errors
from postd_common.secrets import Secret
from postd_vault.adapters.postgres import PostgresSecretStore
from postd_vault.domain.cache import DataKeyCache
from postd_vault.domain.envelope import data_key_aad
from postd_vault.domain.model import AuditAction, AuditQuery, Scope, SecretAddress, TokenBundle
from postd_vault.domain.vault import Vault
from postd_vault.kms import KeyVersionDisabled

pytestmark = pytest.mark.integration

EXPIRES = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def bundle(access: str = "at-1", refresh: str = "rt-1", **extra: str) -> TokenBundle:
    return TokenBundle(
        access_token=Secret(access),
        refresh_token=Secret(refresh),
        token_type="Bearer",
        expires_at=EXPIRES,
        refresh_expires_at=EXPIRES + timedelta(days=60),
        scopes=("pages_manage_posts", "pages_read_engagement"),
        extra={k: Secret(v) for k, v in extra.items()},
        issued_at=EXPIRES - timedelta(hours=1),
    )


def failures(stage: str) -> float:
    value = REGISTRY.get_sample_value(
        "postd_vault_decrypt_failures_total", {"scope": "token_bundle", "stage": stage}
    )
    return value or 0.0


async def test_round_trip_keeps_every_field(vault: Vault, tenant: str) -> None:
    stored = await vault.store_token_bundle(
        "connectors", tenant, "conn-1", bundle(page_token="pg-secret")
    )
    assert stored.stored.version == 1
    assert not stored.refresh_token_kept
    got, info = await vault.get_token_bundle("connectors", tenant, "conn-1")
    assert got.to_plaintext() == bundle(page_token="pg-secret").to_plaintext()
    assert got.extra["page_token"].reveal() == "pg-secret"
    assert info.scopes == ("pages_manage_posts", "pages_read_engagement")
    assert info.expires_at == EXPIRES
    assert info.refresh_fingerprint == vault.fingerprint(tenant, "conn-1", Secret("rt-1"))
    assert len(info.refresh_fingerprint) == 64
    assert "rt-1" not in info.refresh_fingerprint


async def test_nothing_readable_is_stored(
    vault: Vault, tenant: str, pg_pool: asyncpg.Pool, schema: str
) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle("at-plain", "rt-plain"))
    row = await pg_pool.fetchrow(
        f"SELECT wrapped_key, ciphertext FROM {schema}.secrets WHERE tenant_id = $1", tenant
    )
    assert row is not None
    for needle in (b"at-plain", b"rt-plain"):
        assert needle not in row["wrapped_key"]
        assert needle not in row["ciphertext"]


async def test_unknown_or_foreign_connection_is_not_found(vault: Vault, tenant: str) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle())
    with pytest.raises(errors.NotFound):
        await vault.get_token_bundle("connectors", tenant, "conn-unknown")
    with pytest.raises(errors.NotFound):
        await vault.get_token_bundle("connectors", str(uuid.uuid4()), "conn-1")


async def test_a_row_moved_to_another_tenant_does_not_decrypt(
    vault: Vault, tenant: str, pg_pool: asyncpg.Pool, schema: str
) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle())
    thief = str(uuid.uuid4())
    before = failures("data_key")
    await pg_pool.execute(
        f"UPDATE {schema}.secrets SET tenant_id = $2 WHERE tenant_id = $1", tenant, thief
    )
    with pytest.raises(errors.DataLoss) as lost:
        await vault.get_token_bundle("connectors", thief, "conn-1")
    assert "conn-1" in lost.value.message
    assert "at-1" not in lost.value.message
    assert failures("data_key") == before + 1
    events = await vault.list_audit(
        AuditQuery(tenant_id=thief, actions=(AuditAction.DECRYPT_FAILED,))
    )
    assert [(e.entry.connection_id, e.entry.success) for e in events] == [("conn-1", False)]


async def test_a_row_copied_onto_another_connection_does_not_decrypt(
    vault: Vault, tenant: str, pg_pool: asyncpg.Pool, schema: str
) -> None:
    await vault.store_token_bundle("connectors", tenant, "victim", bundle("victim-token"))
    await vault.store_token_bundle("connectors", tenant, "attacker", bundle("attacker-token"))
    await pg_pool.execute(
        f"""UPDATE {schema}.secrets AS a SET wrapped_key = v.wrapped_key,
                   ciphertext = v.ciphertext, key_version = v.key_version
            FROM {schema}.secrets AS v
            WHERE a.tenant_id = $1 AND a.connection_id = 'attacker'
              AND v.tenant_id = $1 AND v.connection_id = 'victim'""",
        tenant,
    )
    with pytest.raises(errors.DataLoss):
        await vault.get_token_bundle("connectors", tenant, "attacker")
    got, _ = await vault.get_token_bundle("connectors", tenant, "victim")
    assert got.access_token.reveal() == "victim-token"


@pytest.mark.parametrize(
    ("column", "stage"),
    [("ciphertext", "payload"), ("wrapped_key", "data_key")],
)
async def test_a_flipped_bit_is_detected(
    vault: Vault, tenant: str, pg_pool: asyncpg.Pool, schema: str, column: str, stage: str
) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle())
    before = failures(stage)
    await pg_pool.execute(
        f"UPDATE {schema}.secrets SET {column} = overlay({column} placing"
        f" set_byte('\\x00'::bytea, 0, get_byte({column}, 20) # 1) from 21 for 1)"
        " WHERE tenant_id = $1",
        tenant,
    )
    with pytest.raises(errors.DataLoss):
        await vault.get_token_bundle("connectors", tenant, "conn-1")
    assert failures(stage) == before + 1


async def test_a_relabelled_key_version_is_detected(
    vault: Vault, tenant: str, pg_pool: asyncpg.Pool, schema: str
) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle())
    await vault.rotate("operator", "test")  # v2 exists and is enabled
    await pg_pool.execute(
        f"UPDATE {schema}.secrets SET key_version = 'v2' WHERE tenant_id = $1", tenant
    )
    with pytest.raises(errors.DataLoss):
        await vault.get_token_bundle("connectors", tenant, "conn-1")


async def test_an_empty_refresh_token_keeps_the_stored_one(vault: Vault, tenant: str) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle("at-1", "rt-1"))
    replaced = await vault.replace_token_bundle(
        "connectors", tenant, "conn-1", bundle("at-2", ""), expected_version=1
    )
    assert replaced.refresh_token_kept
    assert replaced.stored.version == 2
    got, info = await vault.get_token_bundle("connectors", tenant, "conn-1")
    assert (got.access_token.reveal(), got.refresh_token.reveal()) == ("at-2", "rt-1")
    assert info.refresh_fingerprint == vault.fingerprint(tenant, "conn-1", Secret("rt-1"))
    # A reconnect (store) without a refresh token keeps it too.
    again = await vault.store_token_bundle("connectors", tenant, "conn-1", bundle("at-3", ""))
    assert again.refresh_token_kept
    got, _ = await vault.get_token_bundle("connectors", tenant, "conn-1")
    assert got.refresh_token.reveal() == "rt-1"


async def test_replace_is_a_compare_and_swap(vault: Vault, tenant: str) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle("at-1", "rt-1"))
    _, info = await vault.get_token_bundle("connectors", tenant, "conn-1")
    old_fp = info.refresh_fingerprint
    await vault.replace_token_bundle(
        "connectors", tenant, "conn-1", bundle("at-2", "rt-2"), expected_fingerprint=old_fp
    )
    # A second refresher still holding rt-1 must not overwrite (nor spend rt-1 again).
    with pytest.raises(errors.Conflict) as stale:
        await vault.replace_token_bundle(
            "connectors", tenant, "conn-1", bundle("at-x", "rt-x"), expected_fingerprint=old_fp
        )
    assert "read it again" in stale.value.message
    with pytest.raises(errors.Conflict):
        await vault.replace_token_bundle(
            "connectors", tenant, "conn-1", bundle("at-y", "rt-y"), expected_version=1
        )
    got, info = await vault.get_token_bundle("connectors", tenant, "conn-1")
    assert (got.refresh_token.reveal(), info.version) == ("rt-2", 2)
    with pytest.raises(errors.NotFound):
        await vault.replace_token_bundle("connectors", tenant, "nope", bundle())


async def test_racing_refreshers_on_one_refresh_token_have_one_winner(
    vault: Vault, tenant: str
) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle("at-0", "rt-0"))
    _, info = await vault.get_token_bundle("connectors", tenant, "conn-1")

    async def refresh(n: int) -> str:
        try:
            await vault.replace_token_bundle(
                "connectors",
                tenant,
                "conn-1",
                bundle(f"at-{n}", f"rt-{n}"),
                expected_fingerprint=info.refresh_fingerprint,
            )
        except errors.Conflict:
            return "lost"
        return f"rt-{n}"

    outcomes = await asyncio.gather(*(refresh(n) for n in range(1, 9)))
    winners = [o for o in outcomes if o != "lost"]
    assert len(winners) == 1
    got, info = await vault.get_token_bundle("connectors", tenant, "conn-1")
    assert got.refresh_token.reveal() == winners[0]
    assert info.version == 2


async def test_crypto_shred_leaves_nothing_decryptable(
    vault: Vault, tenant: str, pg_pool: asyncpg.Pool, schema: str, store: PostgresSecretStore
) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle())
    await vault.store_platform_secret(
        "connectors", tenant, "conn-1.webhook", "webhook_signing_secret", b"whsig", "conn-1"
    )
    await vault.store_platform_secret("connectors", tenant, "tenant-wide", "api_key", b"keep")
    await vault.store_token_bundle("connectors", tenant, "conn-2", bundle("other"))
    # A "backup" taken before the shred.
    backup = await pg_pool.fetch(
        f"SELECT * FROM {schema}.secrets WHERE tenant_id = $1 AND connection_id = 'conn-1'",
        tenant,
    )
    assert len(backup) == 2

    assert await vault.delete_connection_secrets("connectors", tenant, "conn-1", "user left") == 2
    assert await vault.delete_connection_secrets("connectors", tenant, "conn-1", "again") == 0
    with pytest.raises(errors.NotFound):
        await vault.get_token_bundle("connectors", tenant, "conn-1")
    with pytest.raises(errors.NotFound):
        await vault.get_platform_secret("connectors", tenant, "conn-1.webhook")
    rows = await pg_pool.fetch(
        f"SELECT state, key_version, wrapped_key, ciphertext FROM {schema}.secrets"
        " WHERE tenant_id = $1 AND connection_id = 'conn-1'",
        tenant,
    )
    assert [tuple(r) for r in rows] == [("shredded", None, None, None)] * 2
    # Other secrets are untouched.
    assert (await vault.get_platform_secret("connectors", tenant, "tenant-wide")).value == b"keep"
    assert (await vault.get_token_bundle("connectors", tenant, "conn-2"))[0].access_token

    # A tombstone cannot be filled with the backed-up key material again.
    with pytest.raises(asyncpg.IntegrityConstraintViolationError):
        await pg_pool.execute(
            f"UPDATE {schema}.secrets SET state = 'live', key_version = $2, wrapped_key = $3,"
            " ciphertext = $4, shredded_at = NULL WHERE id = $1",
            backup[0]["id"],
            backup[0]["key_version"],
            backup[0]["wrapped_key"],
            backup[0]["ciphertext"],
        )
    # The backup's wrapped keys die with their KEK version: rotate, rewrap what is
    # live, disable the old version, and the backup no longer unwraps anywhere.
    await vault.rotate("operator", "retire v1")
    await vault.run_rewrap("operator")
    await vault.disable_key_version("operator", "v1", "after shred")
    old = backup[0]
    address = SecretAddress(
        tenant, Scope(old["scope"]), old["kind"], old["connection_id"], old["name"]
    )
    with pytest.raises(KeyVersionDisabled):
        await vault.kms.unwrap(
            bytes(old["wrapped_key"]), data_key_aad(address, "v1"), old["key_version"]
        )
    shreds = await store.list_audit(
        AuditQuery(tenant_id=tenant, actions=(AuditAction.DELETE_CONNECTION_SECRETS,))
    )
    assert {e.entry.detail for e in shreds} == {"user left; 2 shredded", "again; 0 shredded"}


async def test_platform_secrets_version_and_validate(vault: Vault, tenant: str) -> None:
    first = await vault.store_platform_secret(
        "webhook-router", tenant, "mailchimp.webhook_path_secret", "webhook_path_secret", b"s1"
    )
    second = await vault.store_platform_secret(
        "webhook-router", tenant, "mailchimp.webhook_path_secret", "webhook_path_secret", b"s2"
    )
    assert (first.version, second.version) == (1, 2)
    found = await vault.get_platform_secret(
        "webhook-router", tenant, "mailchimp.webhook_path_secret"
    )
    assert (found.value, found.kind, found.version) == (b"s2", "webhook_path_secret", 2)
    with pytest.raises(errors.InvalidArgument):
        await vault.store_platform_secret("c", tenant, "bad name!", "api_key", b"x")
    with pytest.raises(errors.InvalidArgument):
        await vault.store_platform_secret("c", tenant, "n", "oauth_token_bundle", b"x")
    with pytest.raises(errors.InvalidArgument):
        await vault.store_platform_secret("c", tenant, "n", "api_key", b"")
    assert await vault.delete_platform_secret("c", tenant, "mailchimp.webhook_path_secret", "") == 1
    assert await vault.delete_platform_secret("c", tenant, "mailchimp.webhook_path_secret", "") == 0


async def test_every_operation_is_audited_without_secrets(vault: Vault, tenant: str) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle("at-a", "rt-a"))
    await vault.get_token_bundle("connectors", tenant, "conn-1")
    with pytest.raises(errors.NotFound):
        await vault.get_token_bundle("connectors", tenant, "conn-9")
    await vault.replace_token_bundle("connectors", tenant, "conn-1", bundle("at-b", ""))
    await vault.delete_connection_secrets("connectors", tenant, "conn-1", "token=rt-a bye")
    events = await vault.list_audit(AuditQuery(tenant_id=tenant))
    got = [(e.entry.action, e.entry.connection_id, e.entry.success) for e in events]
    assert got == [
        (AuditAction.DELETE_CONNECTION_SECRETS, "conn-1", True),
        (AuditAction.REPLACE_TOKEN_BUNDLE, "conn-1", True),
        (AuditAction.READ_TOKEN_BUNDLE, "conn-9", False),
        (AuditAction.READ_TOKEN_BUNDLE, "conn-1", True),
        (AuditAction.STORE_TOKEN_BUNDLE, "conn-1", True),
    ]
    assert all(e.entry.actor == "connectors" for e in events)
    # Reads and writes name the KEK version involved (a shred may span several).
    assert [e.entry.key_version for e in events[1:]] == ["v1", "", "v1", "v1"]
    text = repr(events)
    for secret in ("at-a", "rt-a", "at-b"):
        assert secret not in text
    # Paging walks the same events.
    first = await vault.list_audit(AuditQuery(tenant_id=tenant, page_size=2))
    rest = await vault.list_audit(
        AuditQuery(tenant_id=tenant, page_size=10, after=(first[1].occurred_at, first[1].id))
    )
    assert [e.id for e in first[:2] + rest] == [e.id for e in events]


async def test_audit_events_cannot_be_rewritten(
    vault: Vault, tenant: str, pg_pool: asyncpg.Pool, schema: str
) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle())
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pg_pool.execute(f"DELETE FROM {schema}.audit_events WHERE tenant_id = $1", tenant)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pg_pool.execute(
            f"UPDATE {schema}.audit_events SET actor = 'x' WHERE tenant_id = $1", tenant
        )


async def test_the_data_key_cache_skips_the_kms_and_forgets_shredded_keys(
    make_vault: Callable[..., Awaitable[Vault]], local_kms, tenant: str
) -> None:
    vault = await make_vault(local_kms, cache_seconds=60)
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle())
    unwraps = local_kms.calls.get("unwrap", 0)
    for _ in range(5):
        await vault.get_token_bundle("connectors", tenant, "conn-1")
    assert local_kms.calls.get("unwrap", 0) == unwraps  # served from the cache
    assert len(vault._cache) >= 1
    await vault.delete_connection_secrets("connectors", tenant, "conn-1", "")
    assert len(vault._cache) == 1  # only the vault's own fingerprint key


async def test_without_the_cache_every_get_unwraps(vault: Vault, local_kms, tenant: str) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle())
    unwraps = local_kms.calls.get("unwrap", 0)
    for _ in range(3):
        await vault.get_token_bundle("connectors", tenant, "conn-1")
    assert local_kms.calls["unwrap"] == unwraps + 3


async def test_an_unavailable_kms_writes_nothing(
    vault: Vault, local_kms, tenant: str, pg_pool: asyncpg.Pool, schema: str
) -> None:
    await vault.store_token_bundle("connectors", tenant, "conn-1", bundle("at-1", "rt-1"))
    local_kms.down = True
    with pytest.raises(errors.Unavailable) as down:
        await vault.store_token_bundle("connectors", tenant, "conn-2", bundle())
    assert down.value.retry_after == 3.0
    with pytest.raises(errors.Unavailable):
        await vault.replace_token_bundle("connectors", tenant, "conn-1", bundle("at-2", "rt-2"))
    with pytest.raises(errors.Unavailable):
        await vault.get_token_bundle("connectors", tenant, "conn-1")
    local_kms.down = False
    rows = await pg_pool.fetch(
        f"SELECT connection_id, version FROM {schema}.secrets WHERE tenant_id = $1", tenant
    )
    assert [tuple(r) for r in rows] == [("conn-1", 1)]
    got, _ = await vault.get_token_bundle("connectors", tenant, "conn-1")
    assert got.refresh_token.reveal() == "rt-1"


async def test_a_database_that_does_not_answer_is_unavailable_then_recovers(
    local_kms, tenant: str, pg_dsn: str, schema: str
) -> None:
    own_pool = await db.create_pool(
        pg_dsn, min_size=1, max_size=2, command_timeout=0.5, reset_session=False
    )
    locker = await asyncpg.connect(pg_dsn)
    try:
        vault = Vault(PostgresSecretStore(own_pool, schema=schema), local_kms, DataKeyCache(0, 0))
        await vault.start()
        await vault.store_token_bundle("connectors", tenant, "c", bundle())
        lock = locker.transaction()
        await lock.start()
        await locker.execute(f"LOCK TABLE {schema}.secrets IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(errors.Unavailable) as down:
            await vault.get_token_bundle("connectors", tenant, "c")
        assert "database is unavailable" in down.value.message
        with pytest.raises(errors.Unavailable):
            await vault.store_token_bundle("connectors", tenant, "d", bundle())
        await lock.rollback()
        got, _ = await vault.get_token_bundle("connectors", tenant, "c")
        assert got.access_token.reveal() == "at-1"
        with pytest.raises(errors.NotFound):  # the store that timed out wrote nothing
            await vault.get_token_bundle("connectors", tenant, "d")
    finally:
        await locker.close()
        await own_pool.close()


async def test_a_replace_whose_answer_was_lost_is_safe_to_retry(vault: Vault, tenant: str) -> None:
    await vault.store_token_bundle("connectors", tenant, "c", bundle("at-1", "rt-1"))
    _, info = await vault.get_token_bundle("connectors", tenant, "c")
    new = bundle("at-2", "rt-2")
    await vault.replace_token_bundle(
        "connectors", tenant, "c", new, expected_fingerprint=info.refresh_fingerprint
    )
    # The caller never saw the answer and retries the same compare-and-swap: it is
    # refused (nothing is written twice), and reading gives it the tokens it sent.
    with pytest.raises(errors.Conflict):
        await vault.replace_token_bundle(
            "connectors", tenant, "c", new, expected_fingerprint=info.refresh_fingerprint
        )
    got, after = await vault.get_token_bundle("connectors", tenant, "c")
    assert (got.access_token.reveal(), got.refresh_token.reveal(), after.version) == (
        "at-2",
        "rt-2",
        2,
    )


async def test_the_vaults_own_tenant_id_is_refused(vault: Vault) -> None:
    for call in (
        vault.store_token_bundle("connectors", "_vault", "c", bundle()),
        vault.get_platform_secret("connectors", "_vault", "_vault.refresh_token_fingerprint_key"),
        vault.delete_connection_secrets("connectors", "_vault", "c", ""),
    ):
        with pytest.raises(errors.InvalidArgument):
            await call
