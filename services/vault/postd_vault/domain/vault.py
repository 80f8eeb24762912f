"""The vault's use cases: store, read, replace and shred secrets; rotate and rewrap keys.

Transport-free: the servicer turns requests into these calls and the domain errors
raised here (from :mod:`postd_common.errors`) into status codes. Every error
message names ids and versions only, never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Final, TypeVar

from opentelemetry import trace

from postd_common import errors
from postd_common.logging import get_logger, redact_text
from postd_common.secrets import Secret
from postd_vault.domain.cache import DataKeyCache, cache_key
from postd_vault.domain.envelope import (
    PayloadAuthenticationFailed,
    data_key_aad,
    new_data_key,
    open_sealed,
    payload_aad,
    seal,
)
from postd_vault.domain.model import (
    BUNDLE_KIND,
    FINGERPRINT_KEY_KIND,
    FINGERPRINT_KEY_NAME,
    INTERNAL_TENANT,
    AuditAction,
    AuditEntry,
    AuditEvent,
    AuditQuery,
    KeyVersionRecord,
    PlatformSecret,
    RewrapResult,
    RotationStatus,
    Scope,
    SealedSecret,
    SecretAddress,
    TokenBundle,
)
from postd_vault.kms import (
    KeyVersionDisabled,
    KeyVersionNotFound,
    KeyVersionStateError,
    Kms,
    KmsError,
    KmsUnavailable,
    RotationUnsupported,
    UnwrapFailed,
)
from postd_vault.metrics import DECRYPT_FAILURES, KMS_ERRORS, REWRAPPED
from postd_vault.ports import KeyVersionRetired, SecretStore, StaleWrite

log = get_logger(__name__)
tracer = trace.get_tracer("postd_vault")

T = TypeVar("T")

VAULT_ACTOR: Final = "vault"
MAX_SECRET_BYTES: Final = 64 * 1024
MAX_REASON: Final = 500
_WRITE_ATTEMPTS: Final = 5
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")
_KIND = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_RESERVED_KINDS: Final = frozenset({BUNDLE_KIND, FINGERPRINT_KEY_KIND})
_ID_MAX: Final = 200


@dataclass(frozen=True)
class BundleWrite:
    """The outcome of storing or replacing a token bundle."""

    stored: SealedSecret
    refresh_token_kept: bool


class Vault:
    """Envelope-encrypted secret storage over a :class:`SecretStore` and a :class:`Kms`."""

    def __init__(
        self,
        store: SecretStore,
        kms: Kms,
        cache: DataKeyCache,
        *,
        rewrap_batch_size: int = 500,
        rewrap_concurrency: int = 16,
        rewrap_stale_seconds: float = 120.0,
    ) -> None:
        self._store = store
        self._kms = kms
        self._cache = cache
        self._rewrap_batch_size = rewrap_batch_size
        self._rewrap_concurrency = rewrap_concurrency
        self._rewrap_stale_seconds = rewrap_stale_seconds
        self._fingerprint_key: bytes | None = None

    @property
    def kms(self) -> Kms:
        return self._kms

    # ------------------------------------------------------------------ start-up

    async def start(self) -> None:
        """Mirror the KMS's key versions and load (or create) the fingerprint key.

        Raises errors.Unavailable (KMS or database down), errors.DataLoss (the
        fingerprint key does not decrypt: wrong keyring), errors.FailedPrecondition."""
        await self.sync_key_versions()
        self._fingerprint_key = await self._load_fingerprint_key()

    async def sync_key_versions(self) -> None:
        versions = await self._kms_call("list_versions", self._kms.list_versions())
        if not any(v.primary for v in versions):
            raise errors.FailedPrecondition(
                f"the {self._kms.provider} KMS key has no primary version to wrap data keys with"
            )
        await self._store.sync_key_versions(self._kms.provider, versions)

    async def _load_fingerprint_key(self) -> bytes:
        address = SecretAddress(
            INTERNAL_TENANT, Scope.INTERNAL, FINGERPRINT_KEY_KIND, name=FINGERPRINT_KEY_NAME
        )
        for _ in range(_WRITE_ATTEMPTS):
            current = await self._store.read_live(address)
            if current is not None:
                return await self._open(current, VAULT_ACTOR)
            key = secrets.token_bytes(32)
            sealed = await self._seal(str(uuid.uuid4()), address, key, version=1)
            audit = AuditEntry(
                AuditAction.STORE_PLATFORM_SECRET,
                VAULT_ACTOR,
                tenant_id=INTERNAL_TENANT,
                secret_name=FINGERPRINT_KEY_NAME,
                key_version=sealed.key_version,
                detail="created the refresh-token fingerprint key",
            )
            try:
                await self._store.write(sealed, replaces=None, audit=audit)
            except (StaleWrite, KeyVersionRetired):
                continue  # another replica created it, or a rotation raced: read again
            return key
        raise errors.Unavailable("could not load the fingerprint key", retry_after=1.0)

    def fingerprint(self, tenant_id: str, connection_id: str, refresh_token: Secret) -> str:
        """HMAC-SHA256 of a refresh token under the vault's key, bound to its owner (hex)."""
        if not refresh_token:
            return ""
        assert self._fingerprint_key is not None, "Vault.start() was not awaited"
        message = b"\0".join(
            (tenant_id.encode(), connection_id.encode(), refresh_token.reveal_bytes())
        )
        return hmac.new(self._fingerprint_key, message, hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ token bundles

    async def store_token_bundle(
        self, actor: str, tenant_id: str, connection_id: str, bundle: TokenBundle
    ) -> BundleWrite:
        """Create or overwrite a connection's bundle; an empty refresh token keeps the
        stored one. Raises InvalidArgument, Unavailable."""
        address = self._bundle_address(tenant_id, connection_id)
        _require_access_token(bundle)
        return await self._write_bundle(
            actor, address, bundle, AuditAction.STORE_TOKEN_BUNDLE, replace_only=False
        )

    async def replace_token_bundle(
        self,
        actor: str,
        tenant_id: str,
        connection_id: str,
        bundle: TokenBundle,
        *,
        expected_fingerprint: str = "",
        expected_version: int = 0,
    ) -> BundleWrite:
        """Replace an existing bundle after a refresh, optionally as a compare-and-swap.

        Raises NotFound, Conflict (the expectation no longer holds: someone else
        refreshed first), DataLoss (the stored bundle is corrupt and its refresh
        token was needed), InvalidArgument, Unavailable."""
        address = self._bundle_address(tenant_id, connection_id)
        _require_access_token(bundle)
        if expected_version < 0:
            raise errors.InvalidArgument(
                "expected_version must not be negative", field="expected_version"
            )
        return await self._write_bundle(
            actor,
            address,
            bundle,
            AuditAction.REPLACE_TOKEN_BUNDLE,
            replace_only=True,
            expected_fingerprint=expected_fingerprint,
            expected_version=expected_version,
        )

    async def get_token_bundle(
        self, actor: str, tenant_id: str, connection_id: str
    ) -> tuple[TokenBundle, SealedSecret]:
        """The decrypted bundle and its metadata; the read is audited.

        Raises NotFound, DataLoss, FailedPrecondition (its key version is disabled
        in the KMS), Unavailable."""
        address = self._bundle_address(tenant_id, connection_id)
        audit = AuditEntry(
            AuditAction.READ_TOKEN_BUNDLE, actor, tenant_id=tenant_id, connection_id=connection_id
        )
        sealed = await self._store.read_live(address, audit=audit)
        if sealed is None:
            raise errors.NotFound(f"no token bundle for connection {connection_id}")
        return await self._open_bundle(sealed, actor), sealed

    async def delete_connection_secrets(
        self, actor: str, tenant_id: str, connection_id: str, reason: str
    ) -> int:
        """Crypto-shred a connection's bundle and the named secrets scoped to it.
        Idempotent: returns how many were destroyed by this call (0 if none)."""
        _require_id(tenant_id, "tenant_id")
        _require_id(connection_id, "connection_id")
        audit = AuditEntry(
            AuditAction.DELETE_CONNECTION_SECRETS,
            actor,
            tenant_id=tenant_id,
            connection_id=connection_id,
            detail=_reason(reason),
        )
        shredded = await self._store.shred(tenant_id, connection_id=connection_id, audit=audit)
        self._forget(shredded)
        return len(shredded)

    def _bundle_address(self, tenant_id: str, connection_id: str) -> SecretAddress:
        _require_id(tenant_id, "tenant_id")
        _require_id(connection_id, "connection_id")
        return SecretAddress(tenant_id, Scope.TOKEN_BUNDLE, BUNDLE_KIND, connection_id)

    async def _write_bundle(
        self,
        actor: str,
        address: SecretAddress,
        bundle: TokenBundle,
        action: AuditAction,
        *,
        replace_only: bool,
        expected_fingerprint: str = "",
        expected_version: int = 0,
    ) -> BundleWrite:
        compare_and_swap = bool(expected_fingerprint or expected_version)
        for _ in range(_WRITE_ATTEMPTS):
            current = await self._store.read_live(address)
            if current is None and replace_only:
                raise errors.NotFound(f"no token bundle for connection {address.connection_id}")
            if current is not None:
                _check_expectations(current, expected_fingerprint, expected_version)
            kept = False
            new = bundle
            if not bundle.refresh_token and current is not None:
                stored = await self._previous_bundle(current, actor, required=replace_only)
                if stored is not None and stored.refresh_token:
                    new = bundle.with_refresh_token(stored.refresh_token)
                    kept = True
            version = current.version + 1 if current is not None else 1
            sealed = await self._seal(
                current.id if current is not None else str(uuid.uuid4()),
                address,
                new.to_plaintext(),
                version=version,
            )
            sealed = replace(
                sealed,
                refresh_fingerprint=self.fingerprint(
                    address.tenant_id, address.connection_id, new.refresh_token
                ),
                expires_at=new.expires_at,
                refresh_expires_at=new.refresh_expires_at,
                scopes=new.scopes,
            )
            audit = AuditEntry(
                action,
                actor,
                tenant_id=address.tenant_id,
                connection_id=address.connection_id,
                key_version=sealed.key_version,
                detail="refresh token kept" if kept else "",
            )
            try:
                stored_row = await self._store.write(sealed, replaces=current, audit=audit)
            except KeyVersionRetired:
                continue
            except StaleWrite:
                if compare_and_swap:
                    raise _someone_else_refreshed(address) from None
                continue
            return BundleWrite(stored_row, kept)
        raise errors.Conflict(
            f"the token bundle of connection {address.connection_id} changed on every attempt; "
            "retry"
        )

    async def _previous_bundle(
        self, current: SealedSecret, actor: str, *, required: bool
    ) -> TokenBundle | None:
        """The stored bundle, to carry its refresh token over. A corrupt one fails a
        replace (its refresh token is lost), but not a store: a new consent wins."""
        try:
            return await self._open_bundle(current, actor)
        except errors.DataLoss:
            if required:
                raise
            return None

    async def _open_bundle(self, sealed: SealedSecret, actor: str) -> TokenBundle:
        plaintext = await self._open(sealed, actor)
        try:
            return TokenBundle.from_plaintext(plaintext)
        except ValueError:
            raise await self._integrity_failure(sealed, actor, "format") from None

    # ------------------------------------------------------------------ platform secrets

    async def store_platform_secret(
        self,
        actor: str,
        tenant_id: str,
        name: str,
        kind: str,
        value: bytes,
        connection_id: str = "",
    ) -> SealedSecret:
        """Create a named secret or write a new version of it. Raises InvalidArgument,
        Unavailable."""
        _require_id(tenant_id, "tenant_id")
        if not _NAME.match(name):
            raise errors.InvalidArgument(
                "name must be 1-200 characters of letters, digits and . _ : / -", field="name"
            )
        if not _KIND.match(kind) or kind in _RESERVED_KINDS:
            raise errors.InvalidArgument(
                "kind must be a lower-case identifier (e.g. webhook_signing_secret)",
                field="kind",
            )
        if not value:
            raise errors.InvalidArgument("value is required", field="value")
        if len(value) > MAX_SECRET_BYTES:
            raise errors.InvalidArgument(
                f"value is larger than {MAX_SECRET_BYTES} bytes", field="value"
            )
        if connection_id:
            _require_id(connection_id, "connection_id")
        address = SecretAddress(tenant_id, Scope.PLATFORM_SECRET, kind, connection_id, name)
        for _ in range(_WRITE_ATTEMPTS):
            current = await self._store.read_live(address)
            version = current.version + 1 if current is not None else 1
            sealed = await self._seal(
                current.id if current is not None else str(uuid.uuid4()),
                address,
                value,
                version=version,
            )
            audit = AuditEntry(
                AuditAction.STORE_PLATFORM_SECRET,
                actor,
                tenant_id=tenant_id,
                connection_id=connection_id,
                secret_name=name,
                key_version=sealed.key_version,
            )
            try:
                return await self._store.write(sealed, replaces=current, audit=audit)
            except (StaleWrite, KeyVersionRetired):
                continue
        raise errors.Conflict(f"secret {name} changed on every attempt; retry")

    async def get_platform_secret(self, actor: str, tenant_id: str, name: str) -> PlatformSecret:
        """Raises NotFound, DataLoss, FailedPrecondition, Unavailable."""
        _require_id(tenant_id, "tenant_id")
        if not name:
            raise errors.InvalidArgument("name is required", field="name")
        address = SecretAddress(tenant_id, Scope.PLATFORM_SECRET, "", name=name)
        audit = AuditEntry(
            AuditAction.READ_PLATFORM_SECRET, actor, tenant_id=tenant_id, secret_name=name
        )
        sealed = await self._store.read_live(address, audit=audit)
        if sealed is None:
            raise errors.NotFound(f"no secret named {name}")
        value = await self._open(sealed, actor)
        return PlatformSecret(
            name=sealed.address.name,
            kind=sealed.address.kind,
            value=value,
            connection_id=sealed.address.connection_id,
            version=sealed.version,
            key_version=sealed.key_version,
            updated_at=sealed.updated_at,
        )

    async def delete_platform_secret(
        self, actor: str, tenant_id: str, name: str, reason: str
    ) -> int:
        _require_id(tenant_id, "tenant_id")
        if not name:
            raise errors.InvalidArgument("name is required", field="name")
        audit = AuditEntry(
            AuditAction.DELETE_PLATFORM_SECRET,
            actor,
            tenant_id=tenant_id,
            secret_name=name,
            detail=_reason(reason),
        )
        shredded = await self._store.shred(tenant_id, name=name, audit=audit)
        self._forget(shredded)
        return len(shredded)

    # ------------------------------------------------------------------ key management

    async def rotate(self, actor: str, reason: str) -> tuple[KeyVersionRecord, KeyVersionRecord]:
        """Create a KEK version and make it primary; returns (new, previous).
        Raises FailedPrecondition (provider cannot rotate), Unavailable."""
        previous = await self._store.primary_key_version()
        created = await self._kms_call("create_version", self._kms.create_version())
        await self._store.add_primary_key_version(self._kms.provider, created)
        await self._store.record_audit(
            AuditEntry(
                AuditAction.ROTATE_KEY,
                actor,
                key_version=created.name,
                detail=_join(f"previous primary {previous}", _reason(reason)),
            )
        )
        log.info("key rotated", key_version=created.name, previous=previous, actor=actor)
        records = {r.key_version: r for r in await self._store.key_versions()}
        return records[created.name], records[previous or created.name]

    async def rotation_status(self) -> RotationStatus:
        primary = await self._require_primary()
        counts = await self._store.count_by_key_version()
        versions = await self._store.key_versions()
        running, last_batch = await self._store.rewrap_activity(self._rewrap_stale_seconds)
        total = sum(counts.values())
        rewrapped = counts.get(primary, 0)
        return RotationStatus(
            primary_key_version=primary,
            total=total,
            rewrapped=rewrapped,
            remaining=total - rewrapped,
            by_key_version=tuple(
                (v.key_version, counts[v.key_version]) for v in versions if v.key_version in counts
            ),
            running=running,
            last_batch_at=last_batch,
        )

    async def run_rewrap(
        self,
        actor: str,
        *,
        batch_size: int = 0,
        max_batches: int = 0,
        on_batch: Callable[[int, int], Awaitable[None]] | None = None,
    ) -> RewrapResult:
        """Rewrap data keys not on the primary version, one committed batch at a time.

        Only wrapped data keys change; payloads are never decrypted. A crash or
        cancellation loses at most the batch in flight (rolled back); the next run
        picks up what remains. A row whose data key does not unwrap is skipped,
        counted, audited and left for an operator. ``on_batch(batch_rewrapped,
        total_so_far)`` runs after each commit. Raises Unavailable (KMS or
        database down: batches committed before stay done), InvalidArgument."""
        if batch_size < 0 or max_batches < 0:
            raise errors.InvalidArgument("batch_size and max_batches must not be negative")
        size = min(batch_size or self._rewrap_batch_size, 5000)
        target = await self._require_primary()
        run_id = await self._store.start_rewrap_run(actor, target)
        rewrapped = failed = batches = 0
        after = ""
        error = ""
        try:
            while not max_batches or batches < max_batches:
                primary = await self._require_primary()
                if primary != target:  # rotated meanwhile: follow the new primary
                    target, after = primary, ""
                done, skipped, last_id = await self._rewrap_batch(run_id, target, size, after)
                if last_id is None:
                    break
                after = last_id
                batches += 1
                rewrapped += done
                failed += skipped
                REWRAPPED.inc(done)
                if on_batch is not None:
                    await on_batch(done, rewrapped)
        except asyncio.CancelledError:
            error = "; stopped: cancelled"
            raise
        except errors.DomainError as exc:
            error = f"; stopped: {exc.code}"
            raise
        finally:
            remaining = await self._remaining_or_unknown(target)
            await self._finish_run(run_id, remaining)
            # Audited whether the run finished, failed or was cancelled (best effort:
            # the database may be what failed).
            with contextlib.suppress(errors.Unavailable):
                await self._store.record_audit(
                    AuditEntry(
                        AuditAction.REWRAP,
                        actor,
                        key_version=target,
                        success=failed == 0 and not error,
                        detail=f"rewrapped {rewrapped} in {batches} batches; {remaining} remain"
                        + (f"; {failed} did not unwrap" if failed else "")
                        + error,
                    )
                )
        return RewrapResult(rewrapped, remaining, batches, failed)

    async def _rewrap_batch(
        self, run_id: str, target: str, size: int, after: str
    ) -> tuple[int, int, str | None]:
        """One transaction: (rewrapped, skipped, last id seen or None when nothing is left)."""
        limit = asyncio.Semaphore(self._rewrap_concurrency)

        async def rewrap(row: SealedSecret) -> bytes | None:
            async with limit:
                return await self._rewrap_one(row, target)

        try:
            async with self._store.claim_rewrap_batch(target, size, after) as batch:
                if not batch.rows:
                    return 0, 0, None
                with tracer.start_as_current_span(
                    "vault.rewrap_batch",
                    attributes={"vault.key_version": target, "vault.batch_rows": len(batch.rows)},
                ):
                    results = await asyncio.gather(*(rewrap(row) for row in batch.rows))
                done = 0
                for row, wrapped in zip(batch.rows, results, strict=True):
                    if wrapped is not None:
                        await batch.replace_wrapped_key(row.id, wrapped)
                        done += 1
                await batch.note_progress(run_id, done)
                return done, len(batch.rows) - done, batch.rows[-1].id
        except KeyVersionRetired:
            raise errors.FailedPrecondition(
                f"key version {target} is no longer enabled; rotate again"
            ) from None

    async def _rewrap_one(self, row: SealedSecret, target: str) -> bytes | None:
        old_aad = data_key_aad(row.address, row.key_version)
        try:
            data_key = await self._kms.unwrap(row.wrapped_key, old_aad, row.key_version)
        except (UnwrapFailed, KeyVersionNotFound) as exc:
            await self._note_integrity_failure(row, VAULT_ACTOR, "data_key", type(exc).__name__)
            return None
        except KeyVersionDisabled:
            log.warning(
                "rewrap skipped a data key on a disabled key version",
                secret_id=row.id,
                key_version=row.key_version,
            )
            return None
        except KmsError as exc:
            raise self._kms_failure("unwrap", exc) from None
        wrapped = await self._kms_call(
            "wrap", self._kms.wrap(data_key, data_key_aad(row.address, target), target)
        )
        return wrapped

    async def _remaining_or_unknown(self, target: str) -> int:
        try:
            counts = await self._store.count_by_key_version()
        except errors.Unavailable:
            return -1
        return sum(n for version, n in counts.items() if version != target)

    async def _finish_run(self, run_id: str, remaining: int) -> None:
        try:
            await self._store.finish_rewrap_run(run_id, remaining)
        except errors.Unavailable:
            log.warning("could not record the end of a rewrap run", run_id=run_id)

    async def disable_key_version(
        self, actor: str, requested: str, reason: str
    ) -> KeyVersionRecord:
        """Disable a KEK version nothing uses. Raises NotFound, FailedPrecondition
        (primary, or data keys still wrapped by it), Unavailable."""
        name = await self.resolve_key_version(requested)
        async with self._store.change_key_version(name) as change:
            record = change.record
            if record is None:
                raise errors.NotFound(f"no key version {requested}")
            if record.primary:
                raise errors.FailedPrecondition(
                    f"key version {name} is the primary; rotate to a new version first"
                )
            if record.data_key_count:
                raise errors.FailedPrecondition(
                    f"key version {name} still wraps {record.data_key_count} data keys; "
                    "run the rewrap (python -m postd_vault admin rewrap) first"
                )
            if record.enabled:
                await self._kms_call("disable", self._kms.disable(name))
            record = await change.mark_disabled()
        self._cache.evict_key_version(name)
        await self._store.record_audit(
            AuditEntry(
                AuditAction.DISABLE_KEY_VERSION, actor, key_version=name, detail=_reason(reason)
            )
        )
        log.info("key version disabled", key_version=name, actor=actor)
        return record

    async def resolve_key_version(self, requested: str) -> str:
        """A full version id from what an operator typed: the id itself, or its number
        ("3" for "v3" or ".../cryptoKeyVersions/3"). Raises NotFound, InvalidArgument."""
        if not requested:
            raise errors.InvalidArgument("key_version is required", field="key_version")
        versions = [v.key_version for v in await self._store.key_versions()]
        if requested in versions:
            return requested
        number = requested.removeprefix("v")
        if number.isdigit():
            for version in versions:
                if version == f"v{number}" or version.endswith(f"/cryptoKeyVersions/{number}"):
                    return version
        raise errors.NotFound(f"no key version {requested}")

    async def list_key_versions(self) -> list[KeyVersionRecord]:
        return await self._store.key_versions()

    async def list_audit(self, query: AuditQuery) -> list[AuditEvent]:
        return await self._store.list_audit(query)

    async def record_audit(self, entry: AuditEntry) -> None:
        await self._store.record_audit(entry)

    # ------------------------------------------------------------------ envelope

    async def _require_primary(self) -> str:
        primary = await self._store.primary_key_version()
        if primary is None:
            raise errors.FailedPrecondition("the vault has no primary key version yet")
        return primary

    async def _seal(
        self, secret_id: str, address: SecretAddress, plaintext: bytes, *, version: int
    ) -> SealedSecret:
        key_version = await self._require_primary()
        data_key = new_data_key()
        aad = data_key_aad(address, key_version)
        wrapped = await self._kms_call("wrap", self._kms.wrap(data_key, aad, key_version))
        sealed = SealedSecret(
            id=secret_id,
            address=address,
            version=version,
            key_version=key_version,
            wrapped_key=wrapped,
            ciphertext=seal(data_key, plaintext, payload_aad(address, version)),
        )
        if self._cache.enabled:
            self._cache.put(cache_key(key_version, wrapped, aad), data_key, key_version)
        return sealed

    async def _open(self, sealed: SealedSecret, actor: str) -> bytes:
        aad = data_key_aad(sealed.address, sealed.key_version)
        memo = (
            cache_key(sealed.key_version, sealed.wrapped_key, aad) if self._cache.enabled else b""
        )
        data_key = self._cache.get(memo) if memo else None
        if data_key is None:
            # No span here: a remote provider traces its own calls (kms.<operation>),
            # and a span would cost more than an in-process unwrap.
            try:
                data_key = await self._kms.unwrap(sealed.wrapped_key, aad, sealed.key_version)
            except (UnwrapFailed, KeyVersionNotFound):
                raise await self._integrity_failure(sealed, actor, "data_key") from None
            except KeyVersionDisabled:
                raise errors.FailedPrecondition(
                    f"the key version {sealed.key_version} protecting this secret is "
                    "disabled in the KMS; re-enable it there to read the secret"
                ) from None
            except KmsError as exc:
                raise self._kms_failure("unwrap", exc) from None
            if memo:
                self._cache.put(memo, data_key, sealed.key_version)
        try:
            return open_sealed(
                data_key, sealed.ciphertext, payload_aad(sealed.address, sealed.version)
            )
        except PayloadAuthenticationFailed:
            if memo:
                self._cache.evict(memo)
            raise await self._integrity_failure(sealed, actor, "payload") from None

    def _forget(self, shredded: Sequence[SealedSecret]) -> None:
        for row in shredded:
            aad = data_key_aad(row.address, row.key_version)
            self._cache.evict(cache_key(row.key_version, row.wrapped_key, aad))

    async def _integrity_failure(
        self, sealed: SealedSecret, actor: str, stage: str
    ) -> errors.DataLoss:
        await self._note_integrity_failure(sealed, actor, stage, "")
        what = (
            f"the token bundle of connection {sealed.address.connection_id}"
            if sealed.address.scope is Scope.TOKEN_BUNDLE
            else f"the secret {sealed.address.name}"
        )
        return errors.DataLoss(
            f"{what} failed authentication: it was tampered with or copied from another "
            "tenant or connection, so it cannot be used; store it again (reconnect the "
            "account) and investigate the vault.decrypt_failed audit event"
        )

    async def _note_integrity_failure(
        self, sealed: SealedSecret, actor: str, stage: str, cause: str
    ) -> None:
        DECRYPT_FAILURES.labels(sealed.address.scope.value, stage).inc()
        log.warning(
            "stored secret failed authentication",
            secret_id=sealed.id,
            tenant_id=sealed.address.tenant_id,
            connection_id=sealed.address.connection_id,
            secret_name=sealed.address.name,
            kind=sealed.address.kind,
            key_version=sealed.key_version,
            stage=stage,
            cause=cause,
        )
        try:
            await self._store.record_audit(
                AuditEntry(
                    AuditAction.DECRYPT_FAILED,
                    actor,
                    tenant_id=sealed.address.tenant_id,
                    connection_id=sealed.address.connection_id,
                    secret_name=sealed.address.name,
                    key_version=sealed.key_version,
                    success=False,
                    detail=f"DATA_LOSS at {stage}",
                )
            )
        except errors.Unavailable:
            log.warning("could not audit a decrypt failure", secret_id=sealed.id)

    async def _kms_call(self, operation: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except KmsError as exc:
            raise self._kms_failure(operation, exc) from None

    def _kms_failure(self, operation: str, exc: KmsError) -> errors.DomainError:
        KMS_ERRORS.labels(self._kms.provider, operation, type(exc).__name__).inc()
        if isinstance(exc, KmsUnavailable):
            log.warning("kms unavailable", operation=operation, error=str(exc))
            return errors.Unavailable(
                f"the key management service is unavailable ({operation}); nothing was "
                "written; retry with backoff",
                retry_after=exc.retry_after,
            )
        if isinstance(exc, RotationUnsupported | KeyVersionStateError | KeyVersionDisabled):
            return errors.FailedPrecondition(str(exc))
        if isinstance(exc, KeyVersionNotFound):
            return errors.NotFound(str(exc))
        log.error("kms call failed", operation=operation, error=str(exc))
        return errors.Unavailable(
            f"the key management service failed ({operation}); retry later", retry_after=5.0
        )


def _require_id(value: str, field: str) -> None:
    if not value:
        raise errors.InvalidArgument(f"{field} is required", field=field)
    if len(value) > _ID_MAX or "\0" in value or value == INTERNAL_TENANT:
        raise errors.InvalidArgument(f"{field} is not a valid id", field=field)


def _require_access_token(bundle: TokenBundle) -> None:
    if not bundle.access_token:
        raise errors.InvalidArgument("bundle.access_token is required", field="bundle.access_token")


def _check_expectations(current: SealedSecret, fingerprint: str, version: int) -> None:
    address = current.address
    if version and current.version != version:
        raise _someone_else_refreshed(address)
    if fingerprint and not hmac.compare_digest(
        fingerprint.encode(), current.refresh_fingerprint.encode()
    ):
        raise _someone_else_refreshed(address)


def _someone_else_refreshed(address: SecretAddress) -> errors.Conflict:
    return errors.Conflict(
        f"the token bundle of connection {address.connection_id} changed since you read it "
        "(someone else refreshed first); read it again and use the new tokens, do not "
        "spend the old refresh token again",
        code="bundle_changed",
    )


def _reason(reason: str) -> str:
    """Free text from a caller, for the audit log: masked like a log line, bounded."""
    return redact_text(reason.strip())[:MAX_REASON]


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)
