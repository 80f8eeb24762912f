-- Analytics: collection tasks (one per published post target, one per account), the
-- snapshots they take, the accounts' own daily figures, and the rollups kept up to
-- date as snapshots arrive (deltas between a post's consecutive snapshots). Times are
-- UTC. Figures: NULL = the platform does not report that metric.

CREATE TABLE analytics_tasks (
    id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    connection_id text NOT NULL,
    platform text NOT NULL,
    kind text NOT NULL,                          -- post | account
    job_id uuid UNIQUE,                          -- post: the publish job (one target)
    post_id uuid,
    platform_post_id text NOT NULL DEFAULT '',
    content_type text NOT NULL DEFAULT '',       -- text | image | video | carousel
    published_at timestamptz,
    state text NOT NULL,    -- SCHEDULED | DISPATCHED | COLLECTING | RETRYING | DONE | STOPPED
    state_reason text NOT NULL DEFAULT '',
    -- When the next snapshot is due (SCHEDULED, RETRYING); the lease deadline while
    -- DISPATCHED or COLLECTING, after which the reconciler takes the task back.
    run_at timestamptz NOT NULL,
    round_id uuid,                               -- the dispatch that carries it
    attempts integer NOT NULL DEFAULT 0,         -- failed tries of the current snapshot
    collections integer NOT NULL DEFAULT 0,
    dead_letters integer NOT NULL DEFAULT 0,
    last_collected_at timestamptz,
    last_category text NOT NULL DEFAULT '',
    -- The latest lifetime figures of a post (the rollups hold their deltas).
    impressions bigint, reach bigint, engagements bigint, clicks bigint,
    video_views bigint, conversions bigint,
    likes bigint, comments bigint, shares bigint, saves bigint,
    -- The platform's finer counts (posts); lifetime totals such as followers (accounts).
    breakdown jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX analytics_account_tasks ON analytics_tasks (tenant_id, connection_id)
    WHERE kind = 'account';
-- The dispatcher's and reconciler's: due work and work in flight (finished tasks,
-- most rows over time, stay out of both).
CREATE INDEX analytics_tasks_ready ON analytics_tasks (run_at)
    WHERE state IN ('SCHEDULED', 'RETRYING');
CREATE INDEX analytics_tasks_in_flight ON analytics_tasks (run_at)
    WHERE state IN ('DISPATCHED', 'COLLECTING');
-- Per post, per connection's posts in time, per tenant's posts in time (insights).
CREATE INDEX analytics_posts_by_post ON analytics_tasks (tenant_id, post_id) WHERE kind = 'post';
CREATE INDEX analytics_posts_by_time ON analytics_tasks (tenant_id, published_at)
    WHERE kind = 'post';
CREATE INDEX analytics_posts_by_connection ON analytics_tasks (tenant_id, connection_id, published_at)
    WHERE kind = 'post';

-- Every reading of a post: lifetime figures at that moment (its growth curve).
CREATE TABLE analytics_snapshots (
    task_id uuid NOT NULL,
    tenant_id text NOT NULL,
    taken_at timestamptz NOT NULL,
    impressions bigint, reach bigint, engagements bigint, clicks bigint,
    video_views bigint, conversions bigint,
    likes bigint, comments bigint, shares bigint, saves bigint,
    breakdown jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (task_id, taken_at)
);

-- An account's own figures per day, as the platform dates and reports them (the
-- latest reading of a day replaces the earlier ones: platforms revise recent days).
CREATE TABLE analytics_account_days (
    tenant_id text NOT NULL,
    connection_id text NOT NULL,
    day date NOT NULL,
    impressions bigint, reach bigint, engagements bigint, clicks bigint,
    video_views bigint, conversions bigint,
    likes bigint, comments bigint, shares bigint, saves bigint,
    breakdown jsonb NOT NULL DEFAULT '{}'::jsonb,
    fetched_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, connection_id, day)
);

-- Post figures gained per 15 minutes (UTC) and group: every time zone's local day
-- begins on a quarter hour (India +5:30, Nepal +5:45, Chatham +12:45), so these sum
-- exactly into local buckets of any zone. `posts` counts posts published.
CREATE TABLE analytics_rollup_quarters (
    tenant_id text NOT NULL,
    bucket timestamptz NOT NULL,
    platform text NOT NULL,
    connection_id text NOT NULL,
    content_type text NOT NULL,
    posts integer NOT NULL DEFAULT 0,
    impressions bigint, reach bigint, engagements bigint, clicks bigint,
    video_views bigint, conversions bigint,
    likes bigint, comments bigint, shares bigint, saves bigint,
    PRIMARY KEY (tenant_id, bucket, platform, connection_id, content_type)
);

-- The time zones a tenant asks for (at most a few each): their local days are kept
-- too, built from the quarter hours when first asked for, then maintained with them.
CREATE TABLE analytics_zones (
    tenant_id text NOT NULL,
    time_zone text NOT NULL,
    created_at timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, time_zone)
);

CREATE TABLE analytics_rollup_days (
    tenant_id text NOT NULL,
    time_zone text NOT NULL,
    day date NOT NULL,
    platform text NOT NULL,
    connection_id text NOT NULL,
    content_type text NOT NULL,
    posts integer NOT NULL DEFAULT 0,
    impressions bigint, reach bigint, engagements bigint, clicks bigint,
    video_views bigint, conversions bigint,
    likes bigint, comments bigint, shares bigint, saves bigint,
    PRIMARY KEY (tenant_id, time_zone, day, platform, connection_id, content_type)
);
