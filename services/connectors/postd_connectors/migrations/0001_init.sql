-- Connectors: connections, OAuth states, audit, outbox, publish records, usage.
-- Tokens are never stored here: they live in the vault, keyed by connection id.

CREATE TABLE connections (
    id                 uuid PRIMARY KEY,
    tenant_id          text NOT NULL,
    platform           text NOT NULL,
    external_id        text NOT NULL,
    account_kind       text NOT NULL DEFAULT '',
    account_name       text NOT NULL DEFAULT '',
    username           text NOT NULL DEFAULT '',
    avatar_url         text NOT NULL DEFAULT '',
    scopes             text[] NOT NULL DEFAULT '{}',
    missing_scopes     text[] NOT NULL DEFAULT '{}',
    capabilities       text[] NOT NULL DEFAULT '{}',
    status             text NOT NULL,
    status_reason      text NOT NULL DEFAULT '',
    status_changed_at  timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz,
    refresh_expires_at timestamptz,
    last_refreshed_at  timestamptz,
    last_error         jsonb,
    has_refresh_token  boolean NOT NULL DEFAULT false,
    connected_by       text NOT NULL DEFAULT '',
    -- Non-secret facts the connector needs (a page id, a data-center host, ...).
    attributes         jsonb NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT connections_account_unique UNIQUE (tenant_id, platform, external_id),
    CONSTRAINT connections_status_valid CHECK (
        status IN ('healthy', 'expiring_soon', 'attention', 'revoked', 'disconnected'))
);

CREATE INDEX connections_tenant_created ON connections (tenant_id, created_at DESC, id DESC);
-- ResolveAccount: platform account -> connections across tenants.
CREATE INDEX connections_account ON connections (platform, external_id);
-- ListExpiringConnections walks this index: cost grows with those expiring, not all.
CREATE INDEX connections_soonest_expiry ON connections (
    (LEAST(expires_at, refresh_expires_at)), id)
    WHERE status <> 'disconnected'
      AND (expires_at IS NOT NULL OR refresh_expires_at IS NOT NULL);

-- One row per OAuth flow. Only a hash of the state is kept; the PKCE verifier is
-- sealed under a key derived from the state itself, so these rows alone are useless.
CREATE TABLE oauth_states (
    state_hash          bytea PRIMARY KEY,
    tenant_id           text NOT NULL,
    user_id             text NOT NULL,
    platform            text NOT NULL,
    redirect_uri        text NOT NULL,
    return_url          text NOT NULL DEFAULT '',
    capabilities        text[] NOT NULL DEFAULT '{}',
    requested_scopes    text[] NOT NULL DEFAULT '{}',
    reconnect_id        uuid,
    sealed_verifier     bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    consumed_at         timestamptz
);

CREATE INDEX oauth_states_expiry ON oauth_states (expires_at);

CREATE TABLE connection_audit (
    id               uuid PRIMARY KEY,
    tenant_id        text NOT NULL,
    connection_id    uuid NOT NULL,
    action           text NOT NULL,
    actor            text NOT NULL,
    reason           text NOT NULL DEFAULT '',
    previous_status  text NOT NULL DEFAULT '',
    status           text NOT NULL DEFAULT '',
    details          jsonb NOT NULL DEFAULT '{}',
    occurred_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    seq              bigserial
);

CREATE INDEX connection_audit_tenant ON connection_audit (tenant_id, seq DESC);
CREATE INDEX connection_audit_connection ON connection_audit (tenant_id, connection_id, seq DESC);

-- Transactional outbox: written in the same transaction as the change it announces,
-- moved to Kafka by the relay, deleted once the broker acknowledged it.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    key         text NOT NULL,
    payload     bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- What this service published (or tried to), per job idempotency key, so a retry
-- is reconciled instead of duplicated and an asynchronous publish can resume.
CREATE TABLE publish_records (
    tenant_id         text NOT NULL,
    connection_id     uuid NOT NULL,
    idempotency_key   text NOT NULL,
    status            text NOT NULL,
    fingerprint       text NOT NULL,
    platform_post_id  text NOT NULL DEFAULT '',
    url               text NOT NULL DEFAULT '',
    progress          jsonb NOT NULL DEFAULT '{}',
    error             jsonb,
    attempts          integer NOT NULL DEFAULT 0,
    job_id            text NOT NULL DEFAULT '',
    published_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, connection_id, idempotency_key),
    CONSTRAINT publish_records_status_valid CHECK (
        status IN ('pending', 'unknown', 'processing', 'published', 'failed'))
);

-- Last usage a platform reported (X-App-Usage, quota endpoints), per scope.
CREATE TABLE platform_usage (
    platform      text NOT NULL,
    scope_key     text NOT NULL,
    name          text NOT NULL,
    used_percent  double precision NOT NULL DEFAULT 0,
    used          bigint NOT NULL DEFAULT 0,
    usage_limit   bigint NOT NULL DEFAULT 0,
    blocked_until timestamptz,
    observed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, scope_key, name)
);
