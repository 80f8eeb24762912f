-- The W3C traceparent of the call that created a job (empty: none), so the
-- publish.jobs message the dispatcher sends later, from any replica, continues the
-- trace of the request that asked for the post. It names a span, never a secret.
ALTER TABLE jobs ADD COLUMN trace_context text NOT NULL DEFAULT '';
