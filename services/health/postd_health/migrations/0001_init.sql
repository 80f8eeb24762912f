-- Health's own schema: the expiry watch, the health log, status history, rollups for
-- the dashboard, alert incidents with their outbox, notifications and deliveries.
-- Applied with search_path set to the service's schema (postd_common.db.migrate).

-- One row per connection health watches. `due_at` is the earliest of the next refresh,
-- check and warning; the scheduler claims rows by it through a partial index, so its
-- cost grows with the rows that are due, not with all connections.
CREATE TABLE connection_watch (
    connection_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    platform text NOT NULL,
    account_name text NOT NULL DEFAULT '',
    external_id text NOT NULL DEFAULT '',
    status text NOT NULL,
    status_reason text NOT NULL DEFAULT '',
    status_cause text NOT NULL DEFAULT '',
    status_since timestamptz,
    scopes text[] NOT NULL DEFAULT '{}',
    capabilities text[] NOT NULL DEFAULT '{}',
    expires_at timestamptz,
    refresh_expires_at timestamptz,
    has_refresh_token boolean NOT NULL DEFAULT false,
    token_issued_at timestamptz,
    last_refreshed_at timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    first_failure_at timestamptz,
    last_failure_category text,
    refresh_failures integer NOT NULL DEFAULT 0,
    last_check_at timestamptz,
    retry_at timestamptz,
    refresh_requested_at timestamptz,
    next_refresh_at timestamptz,
    next_check_at timestamptz,
    next_warn_at timestamptz,
    warned_days integer[] NOT NULL DEFAULT '{}',
    due_at timestamptz,
    claim_id uuid,
    claimed_by text,
    claimed_until timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX connection_watch_due ON connection_watch (due_at) WHERE due_at IS NOT NULL;
-- Token health per tenant (expiring within 7 days / 24 hours) without a scan.
CREATE INDEX connection_watch_tenant_expiry ON connection_watch (tenant_id, expires_at)
    WHERE status <> 'disconnected';
CREATE INDEX connection_watch_platform ON connection_watch (platform, tenant_id)
    WHERE status <> 'disconnected';

-- The health log: every synthetic check and refresh.
CREATE TABLE health_checks (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    connection_id text NOT NULL,
    platform text NOT NULL,
    kind text NOT NULL,
    ok boolean NOT NULL,
    checked_at timestamptz NOT NULL,
    latency_ms double precision,
    failure jsonb,
    status_after text NOT NULL
);
CREATE INDEX health_checks_connection ON health_checks (tenant_id, connection_id, checked_at DESC, id DESC);
CREATE INDEX health_checks_tenant ON health_checks (tenant_id, checked_at DESC, id DESC);

-- Status transitions, as connectors announced them on connection.events.
CREATE TABLE status_history (
    event_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    connection_id text NOT NULL,
    platform text NOT NULL,
    previous_status text NOT NULL,
    status text NOT NULL,
    reason text NOT NULL DEFAULT '',
    category text,
    source text NOT NULL DEFAULT '',
    occurred_at timestamptz NOT NULL
);
CREATE INDEX status_history_connection ON status_history (tenant_id, connection_id, occurred_at DESC);

-- Messages already applied, for handlers whose effect is not itself unique.
CREATE TABLE processed_messages (
    consumer text NOT NULL,
    message_key text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_key)
);
CREATE INDEX processed_messages_age ON processed_messages (processed_at);

-- Platform calls counted per minute and per hour: checks, refreshes, publish attempts.
-- latency_hist counts calls per latency bucket (bounds in the store adapter).
CREATE TABLE call_rollups (
    granularity text NOT NULL,          -- 'minute' | 'hour'
    bucket timestamptz NOT NULL,
    tenant_id text NOT NULL,
    platform text NOT NULL,
    source text NOT NULL,               -- 'check' | 'refresh' | 'publish'
    requests integer NOT NULL DEFAULT 0,
    successes integer NOT NULL DEFAULT 0,
    unauthorized integer NOT NULL DEFAULT 0,
    rate_limited integer NOT NULL DEFAULT 0,
    server_errors integer NOT NULL DEFAULT 0,
    timeouts integer NOT NULL DEFAULT 0,
    other_client_errors integer NOT NULL DEFAULT 0,
    passing_failures integer NOT NULL DEFAULT 0,
    jobs_published integer NOT NULL DEFAULT 0,
    jobs_failed integer NOT NULL DEFAULT 0,
    latency_hist integer[] NOT NULL,
    lag_hist integer[] NOT NULL,
    PRIMARY KEY (granularity, bucket, tenant_id, platform, source)
);
CREATE INDEX call_rollups_recent ON call_rollups (granularity, bucket);

-- The last outcome health saw for each publish job: pending retries and the DLQ.
CREATE TABLE publish_jobs (
    job_id text PRIMARY KEY,
    tenant_id text NOT NULL,
    platform text NOT NULL,
    connection_id text NOT NULL,
    state text NOT NULL,               -- retrying | dead_lettered | published | failed | cancelled
    attempt integer NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX publish_jobs_open ON publish_jobs (tenant_id, state) WHERE state IN ('retrying', 'dead_lettered');

-- Snapshots of figures that are states, not events (token health, queue), for charts.
CREATE TABLE figure_snapshots (
    bucket timestamptz NOT NULL,
    tenant_id text NOT NULL,            -- '' for all tenants
    figure text NOT NULL,
    value double precision NOT NULL,
    PRIMARY KEY (figure, tenant_id, bucket)
);

-- Alert incidents: one open (firing) incident per dedupe key.
CREATE TABLE alerts (
    alert_id uuid PRIMARY KEY,
    dedupe_key text NOT NULL,
    tenant_id text NOT NULL,
    kind text NOT NULL,
    severity integer NOT NULL,
    state text NOT NULL,
    title text NOT NULL,
    message text NOT NULL,
    platform text NOT NULL DEFAULT '',
    connection_id text NOT NULL DEFAULT '',
    action_url text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL,
    resolved_at timestamptz,
    last_seen_at timestamptz NOT NULL,
    occurrences integer NOT NULL DEFAULT 1
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (dedupe_key) WHERE state = 'firing';
CREATE INDEX alerts_tenant ON alerts (tenant_id, started_at DESC, alert_id);
CREATE INDEX alerts_recently_resolved ON alerts (dedupe_key, resolved_at DESC) WHERE state = 'resolved';

-- Messages written with the state change that caused them, relayed to Kafka.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    tenant_id text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- In-app notifications, one per (alert, state, severity) and tenant.
CREATE TABLE notifications (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    alert_id text NOT NULL,
    kind text NOT NULL,
    severity integer NOT NULL,
    alert_state text NOT NULL,
    title text NOT NULL,
    message text NOT NULL,
    platform text NOT NULL DEFAULT '',
    connection_id text NOT NULL DEFAULT '',
    action_url text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    read_at timestamptz,
    read_by text NOT NULL DEFAULT '',
    UNIQUE (tenant_id, alert_id, alert_state, severity)
);
CREATE INDEX notifications_tenant ON notifications (tenant_id, created_at DESC, id DESC);
CREATE INDEX notifications_unread ON notifications (tenant_id) WHERE read_at IS NULL;

-- Email and Slack messages of a notification, sent (and retried) by a worker.
CREATE TABLE deliveries (
    id uuid PRIMARY KEY,
    notification_id uuid NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    tenant_id text NOT NULL,
    alert_id text NOT NULL,
    channel text NOT NULL,
    target text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    state text NOT NULL DEFAULT 'pending',   -- pending | sent | failed
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    sent_at timestamptz,
    UNIQUE (notification_id, channel, target)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX deliveries_sent ON deliveries (tenant_id, channel, sent_at) WHERE state = 'sent';

-- Where a tenant's alerts go. The Slack incoming-webhook URL carries a secret; it is
-- never returned whole by the API nor logged.
CREATE TABLE notification_routes (
    tenant_id text PRIMARY KEY,
    emails text[] NOT NULL DEFAULT '{}',
    slack_webhook_url text NOT NULL DEFAULT '',
    min_severity integer NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Element-wise sum of two count arrays (histograms), and its aggregate.
CREATE FUNCTION add_counts(a integer[], b integer[]) RETURNS integer[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
      FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

CREATE AGGREGATE sum_counts(integer[]) (
    SFUNC = add_counts,
    STYPE = integer[],
    INITCOND = '{}'
);
