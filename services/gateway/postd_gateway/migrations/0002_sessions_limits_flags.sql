-- Dashboard sessions, idempotent requests, shared rate-limit windows, feature flags.

-- Per-tenant settings the operator may change: a rate limit other than the default,
-- and early access to alpha features.
ALTER TABLE tenants ADD COLUMN rate_limit integer CHECK (rate_limit IS NULL OR rate_limit > 0);
ALTER TABLE tenants ADD COLUMN early_access boolean NOT NULL DEFAULT false;

ALTER TABLE api_keys ADD COLUMN created_by text NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN revoked_by text;

-- A session is a random bearer value in an HttpOnly cookie; only its SHA-256 is
-- stored, with the SHA-256 of its CSRF token. A session opened with an API key dies
-- with the key (checked on every lookup through key_id).
CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    token_sha256   bytea NOT NULL UNIQUE,
    csrf_sha256    bytea NOT NULL,
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    role           text NOT NULL CHECK (role IN ('owner', 'admin', 'editor', 'viewer')),
    subject        text NOT NULL,
    key_id         text REFERENCES api_keys (id),
    scopes         text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

-- One row per (tenant, Idempotency-Key). ``response_status`` is NULL while the first
-- request is in flight; a replay answers the stored status and body.
CREATE TABLE idempotency_keys (
    tenant_id        uuid NOT NULL,
    key              text NOT NULL,
    fingerprint      bytea NOT NULL,
    response_status  integer,
    response_body    bytea,
    content_type     text,
    response_headers jsonb NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- Fixed-window counters shared by every gateway replica: one row per tenant and
-- window, bumped by an atomic upsert (replicas take leases of several requests).
CREATE TABLE rate_limit_windows (
    tenant_id     uuid NOT NULL,
    window_start  timestamptz NOT NULL,
    used          integer NOT NULL,
    last_grant    integer NOT NULL,
    PRIMARY KEY (tenant_id, window_start)
);

-- A flag's global rollout stage, per integration ('' = every integration).
CREATE TABLE feature_flags (
    name          text NOT NULL,
    integration   text NOT NULL DEFAULT '',
    stage         text NOT NULL CHECK (stage IN ('off', 'alpha', 'beta', 'stable')),
    beta_percent  integer NOT NULL DEFAULT 10 CHECK (beta_percent BETWEEN 0 AND 100),
    description   text NOT NULL DEFAULT '',
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, integration)
);

-- A tenant's own choice for one flag, winning over the stage.
CREATE TABLE feature_flag_overrides (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    name         text NOT NULL,
    integration  text NOT NULL DEFAULT '',
    enabled      boolean NOT NULL,
    updated_by   text NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name, integration),
    FOREIGN KEY (name, integration) REFERENCES feature_flags (name, integration) ON DELETE CASCADE
);
