-- The vault's schema: KEK versions, sealed secrets, rewrap runs, the audit log.
-- Applied with search_path set to the vault's schema.

-- A mirror of the KMS's key-encryption-key versions. Writes take FOR SHARE on the
-- version they wrap with and DisableKeyVersion takes FOR UPDATE, so a version can
-- never be disabled while a write that uses it is in flight.
CREATE TABLE key_versions (
    key_version text PRIMARY KEY,
    provider    text NOT NULL,
    state       text NOT NULL CHECK (state IN ('enabled', 'disabled')),
    is_primary  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    promoted_at timestamptz,
    disabled_at timestamptz,
    CHECK (NOT is_primary OR state = 'enabled')
);
CREATE UNIQUE INDEX key_versions_one_primary ON key_versions (is_primary) WHERE is_primary;

-- One row per secret. A live row holds the wrapped data key and the sealed payload
-- (nonce || AES-256-GCM ciphertext); a shredded row is a tombstone with neither.
-- Token-bundle metadata (expiry, scopes, refresh-token fingerprint) is kept in clear:
-- it is what may be known without seeing a secret.
CREATE TABLE secrets (
    id                  uuid PRIMARY KEY,
    tenant_id           text NOT NULL,
    scope               text NOT NULL CHECK (scope IN ('token_bundle', 'platform_secret', 'internal')),
    connection_id       text NOT NULL DEFAULT '',
    name                text NOT NULL DEFAULT '',
    kind                text NOT NULL,
    version             bigint NOT NULL CHECK (version > 0),
    state               text NOT NULL CHECK (state IN ('live', 'shredded')),
    key_version         text REFERENCES key_versions (key_version),
    wrapped_key         bytea,
    ciphertext          bytea,
    refresh_fingerprint text NOT NULL DEFAULT '',
    expires_at          timestamptz,
    refresh_expires_at  timestamptz,
    scopes              text[] NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    shredded_at         timestamptz,
    CHECK (
        (state = 'live' AND key_version IS NOT NULL AND wrapped_key IS NOT NULL
            AND ciphertext IS NOT NULL AND shredded_at IS NULL)
        OR (state = 'shredded' AND key_version IS NULL AND wrapped_key IS NULL
            AND ciphertext IS NULL AND shredded_at IS NOT NULL)
    ),
    CHECK (scope <> 'token_bundle' OR (connection_id <> '' AND name = '')),
    CHECK (scope = 'token_bundle' OR name <> '')
);
CREATE UNIQUE INDEX secrets_live_bundle ON secrets (tenant_id, connection_id)
    WHERE scope = 'token_bundle' AND state = 'live';
CREATE UNIQUE INDEX secrets_live_named ON secrets (tenant_id, name)
    WHERE scope <> 'token_bundle' AND state = 'live';
CREATE INDEX secrets_live_by_connection ON secrets (tenant_id, connection_id)
    WHERE state = 'live' AND connection_id <> '';
CREATE INDEX secrets_live_by_key_version ON secrets (key_version) WHERE state = 'live';

-- A tombstone stays a tombstone: key material cannot be written back into it.
CREATE FUNCTION secrets_no_resurrection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state = 'shredded' THEN
        RAISE EXCEPTION 'secret % was shredded and cannot be written again', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER secrets_no_resurrection BEFORE UPDATE ON secrets
    FOR EACH ROW EXECUTE FUNCTION secrets_no_resurrection();

-- Rewrap runs: progress is also in the rows themselves (their key_version), so a
-- crashed run loses nothing; this table reports who ran what and when.
CREATE TABLE rewrap_runs (
    id                 uuid PRIMARY KEY,
    actor              text NOT NULL,
    target_key_version text NOT NULL,
    started_at         timestamptz NOT NULL DEFAULT now(),
    heartbeat_at       timestamptz NOT NULL DEFAULT now(),
    last_batch_at      timestamptz,
    rewrapped          bigint NOT NULL DEFAULT 0,
    finished_at        timestamptz,
    remaining          bigint
);
CREATE INDEX rewrap_runs_unfinished ON rewrap_runs (heartbeat_at) WHERE finished_at IS NULL;

-- Append-only: who did what to which secret, and when. Never a secret.
CREATE TABLE audit_events (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    occurred_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    tenant_id     text NOT NULL DEFAULT '',
    connection_id text NOT NULL DEFAULT '',
    secret_name   text NOT NULL DEFAULT '',
    action        text NOT NULL,
    actor         text NOT NULL,
    key_version   text NOT NULL DEFAULT '',
    success       boolean NOT NULL,
    detail        text NOT NULL DEFAULT ''
);
CREATE INDEX audit_events_by_time ON audit_events (occurred_at DESC, id DESC);
CREATE INDEX audit_events_by_tenant ON audit_events (tenant_id, connection_id, occurred_at DESC, id DESC);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
