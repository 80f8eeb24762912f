-- Webhook router: inbound deliveries (raw, verdict, routing), their normalised
-- events, the transactional outbox, per-tenant inbound path keys, and outbound
-- endpoints with their deliveries.

CREATE TABLE inbound_sources (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    connection_id text NOT NULL DEFAULT '',
    platform text NOT NULL,
    key_hash bytea NOT NULL,
    key_hint text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE UNIQUE INDEX inbound_sources_key ON inbound_sources (platform, key_hash);
CREATE INDEX inbound_sources_tenant ON inbound_sources (tenant_id);

CREATE TABLE inbound_events (
    id uuid PRIMARY KEY,
    platform text NOT NULL,
    http_method text NOT NULL,
    verdict text NOT NULL,
    verdict_reason text NOT NULL DEFAULT '',
    platform_event_id text NOT NULL DEFAULT '',
    dedupe_key text,
    source_id uuid REFERENCES inbound_sources (id) ON DELETE SET NULL,
    headers jsonb NOT NULL DEFAULT '[]',
    body bytea,
    body_sha256 text NOT NULL,
    body_size integer NOT NULL,
    remote_addr text NOT NULL DEFAULT '',
    received_at timestamptz NOT NULL,
    state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_error text NOT NULL DEFAULT '',
    -- routing, filled in when the delivery is processed
    routed text NOT NULL DEFAULT 'pending',  -- pending | routed | unrouted
    external_account_id text NOT NULL DEFAULT '',
    tenant_ids text[] NOT NULL DEFAULT '{}',
    tenant_id text NOT NULL DEFAULT '',
    connection_id text NOT NULL DEFAULT '',
    types text[] NOT NULL DEFAULT '{}',
    emitted_at timestamptz,
    replay_count integer NOT NULL DEFAULT 0,
    duplicate_count integer NOT NULL DEFAULT 0,
    last_duplicate_at timestamptz
);
-- The dedupe key: one stored delivery per platform event (or body within a window).
CREATE UNIQUE INDEX inbound_events_dedupe ON inbound_events (platform, dedupe_key)
    WHERE dedupe_key IS NOT NULL;
CREATE INDEX inbound_events_due ON inbound_events (next_attempt_at)
    WHERE state IN ('pending', 'retrying');
CREATE INDEX inbound_events_received ON inbound_events (received_at DESC, id DESC);
CREATE INDEX inbound_events_platform_received ON inbound_events (platform, received_at);
CREATE INDEX inbound_events_tenants ON inbound_events USING gin (tenant_ids);

CREATE TABLE normalized_events (
    event_id uuid PRIMARY KEY,
    raw_event_id uuid NOT NULL REFERENCES inbound_events (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    tenant_id text NOT NULL DEFAULT '',
    connection_id text NOT NULL DEFAULT '',
    platform text NOT NULL,
    type text NOT NULL,
    external_account_id text NOT NULL DEFAULT '',
    occurred_at timestamptz,
    payload jsonb NOT NULL,
    platform_event_id text NOT NULL DEFAULT '',
    UNIQUE (raw_event_id, seq)
);

-- Transactional outbox: rows written with the state change they announce, relayed
-- to Kafka, deleted once the broker acknowledged them.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text NOT NULL DEFAULT '',
    value bytea NOT NULL,
    headers jsonb NOT NULL DEFAULT '[]',
    raw_event_id uuid,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE endpoints (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    url text NOT NULL,
    description text NOT NULL DEFAULT '',
    event_types text[] NOT NULL DEFAULT '{}',
    state text NOT NULL DEFAULT 'enabled',  -- enabled | disabled | disabled_failing
    disabled_reason text NOT NULL DEFAULT '',
    consecutive_failures integer NOT NULL DEFAULT 0,
    failing_since timestamptz,
    alert_id uuid,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    secret_hint text NOT NULL,
    secret_generation integer NOT NULL DEFAULT 1,
    previous_secret_expires_at timestamptz,
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_tenant ON endpoints (tenant_id, created_at DESC);

CREATE TABLE deliveries (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    endpoint_id uuid NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    message_id text NOT NULL,
    source_event_id text NOT NULL,
    event_type text NOT NULL,
    payload bytea NOT NULL,
    state text NOT NULL DEFAULT 'pending',  -- pending | retrying | succeeded | failed
    attempt_count integer NOT NULL DEFAULT 0,
    last_http_status integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    last_latency_ms double precision NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    UNIQUE (endpoint_id, source_event_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state IN ('pending', 'retrying');
CREATE INDEX deliveries_tenant ON deliveries (tenant_id, created_at DESC);

CREATE TABLE delivery_attempts (
    delivery_id uuid NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    http_status integer NOT NULL,
    error text NOT NULL DEFAULT '',
    latency_ms double precision NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
