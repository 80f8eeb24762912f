-- The publisher's schema: posts, their per-target jobs and attempts, the dead-letter
-- list, connection pauses, the per-account quota ledger, platform circuit breakers,
-- processed event ids and the event outbox. Times are UTC (timestamptz).

CREATE TABLE posts (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    idempotency_key text NOT NULL,
    -- Hash of the request's meaningful fields: the same key with another body is refused.
    request_fingerprint text NOT NULL,
    content bytea NOT NULL,                      -- postd.common.v1.PostContent
    schedule_kind text NOT NULL,                 -- none | absolute | local
    schedule_local_time text NOT NULL DEFAULT '',
    schedule_time_zone text NOT NULL DEFAULT '',
    publish_at timestamptz,                      -- resolved UTC time; NULL = as soon as possible
    sort_at timestamptz NOT NULL,                -- publish_at, else created_at (list order)
    requires_approval boolean NOT NULL DEFAULT false,
    approval text NOT NULL DEFAULT 'none',       -- none | pending | approved | rejected
    approved_by text NOT NULL DEFAULT '',
    approved_at timestamptz,
    rejected_by text NOT NULL DEFAULT '',
    rejected_at timestamptz,
    approval_note text NOT NULL DEFAULT '',
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX posts_by_sort ON posts (tenant_id, sort_at DESC, id DESC);

CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    post_id uuid NOT NULL REFERENCES posts (id),
    position integer NOT NULL,
    connection_id text NOT NULL,
    platform text NOT NULL,
    idempotency_key text NOT NULL,
    content bytea NOT NULL,                      -- effective content for this target
    state text NOT NULL,
    state_reason text NOT NULL DEFAULT '',
    due_at timestamptz NOT NULL,
    -- When the dispatcher may send it (SCHEDULED, RETRYING); the lease deadline while
    -- DISPATCHED or PUBLISHING, after which the reconciler brings it back; the time it
    -- would have run while PAUSED.
    run_at timestamptz NOT NULL,
    attempt_count integer NOT NULL DEFAULT 0,    -- attempts ever made (numbering)
    budget_used integer NOT NULL DEFAULT 0,      -- attempts counted in this round
    max_attempts integer NOT NULL,
    dispatched_at timestamptz,
    dispatch_count integer NOT NULL DEFAULT 0,
    -- A previous attempt's outcome is unknown: the next one looks the post up first.
    outcome_unknown boolean NOT NULL DEFAULT false,
    platform_post_id text NOT NULL DEFAULT '',
    url text NOT NULL DEFAULT '',
    last_error bytea,                            -- postd.common.v1.PlatformError
    last_category text NOT NULL DEFAULT '',
    dead_lettered boolean NOT NULL DEFAULT false,
    replay_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    finished_at timestamptz,
    UNIQUE (tenant_id, idempotency_key)
);
-- The dispatcher's and reconciler's index: due work by state and time.
CREATE INDEX jobs_by_state_run_at ON jobs (state, run_at);
-- Fair claims: the tenants with ready work, and each one's due jobs in order.
CREATE INDEX jobs_ready_by_tenant ON jobs (tenant_id, run_at)
    WHERE state IN ('SCHEDULED', 'RETRYING');
CREATE INDEX jobs_by_post ON jobs (post_id, position);
CREATE INDEX jobs_by_connection ON jobs (tenant_id, connection_id, state);
CREATE INDEX jobs_by_due ON jobs (tenant_id, due_at, id);

CREATE TABLE attempts (
    job_id uuid NOT NULL REFERENCES jobs (id),
    number integer NOT NULL,
    tenant_id text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz,
    outcome text NOT NULL,
    error bytea,                                 -- postd.common.v1.PlatformError
    category text NOT NULL DEFAULT '',
    reason text NOT NULL DEFAULT '',
    worker_id text NOT NULL DEFAULT '',
    platform_latency_ms double precision,
    PRIMARY KEY (job_id, number)
);

CREATE TABLE dead_letters (
    job_id uuid PRIMARY KEY REFERENCES jobs (id),
    tenant_id text NOT NULL,
    post_id uuid NOT NULL,
    connection_id text NOT NULL,
    platform text NOT NULL,
    category text NOT NULL DEFAULT '',
    reason text NOT NULL,
    dead_lettered_at timestamptz NOT NULL
);
CREATE INDEX dead_letters_by_time ON dead_letters (tenant_id, dead_lettered_at DESC, job_id DESC);

CREATE TABLE connection_pauses (
    tenant_id text NOT NULL,
    connection_id text NOT NULL,
    paused_since timestamptz NOT NULL,
    reason text NOT NULL DEFAULT '',
    category text NOT NULL DEFAULT '',
    source text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, connection_id)
);

-- Connections the publisher has heard of (jobs, pauses, events), so pause / count /
-- backfill can say NOT_FOUND for unknown ones without asking connectors each time.
CREATE TABLE known_connections (
    tenant_id text NOT NULL,
    connection_id text NOT NULL,
    platform text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, connection_id)
);

-- One row per platform call a dispatch reserved, per limit: a sliding-window log.
CREATE TABLE quota_ledger (
    tenant_id text NOT NULL,
    connection_id text NOT NULL,
    limit_name text NOT NULL,
    used_at timestamptz NOT NULL,
    job_id uuid NOT NULL
);
CREATE INDEX quota_ledger_window ON quota_ledger (tenant_id, connection_id, limit_name, used_at);

-- A connection the platform told us to leave alone until a time (Retry-After, usage).
CREATE TABLE quota_blocks (
    tenant_id text NOT NULL,
    connection_id text NOT NULL,
    until timestamptz NOT NULL,
    reason text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant_id, connection_id)
);

-- Platform-wide circuit breakers; no row = closed.
CREATE TABLE breakers (
    platform text PRIMARY KEY,
    state text NOT NULL,                         -- open | half_open
    opened_at timestamptz NOT NULL,
    open_until timestamptz NOT NULL,             -- open: when a probe may go
    cooldown_seconds double precision NOT NULL,
    probe_job_id uuid,
    probe_started_at timestamptz,
    reason text NOT NULL DEFAULT ''
);

CREATE TABLE processed_events (
    event_id text PRIMARY KEY,
    processed_at timestamptz NOT NULL
);

-- Events written in the same transaction as the state they report; a relay moves
-- them to Kafka, so a crash between commit and produce loses nothing.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    message_key text NOT NULL,
    payload bytea NOT NULL,
    headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
