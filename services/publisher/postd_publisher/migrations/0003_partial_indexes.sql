-- Finished jobs (most rows, over time) need no entry in the indexes that find work:
-- partial indexes keep those small and spare every final update their maintenance.

DROP INDEX jobs_by_state_run_at;
CREATE INDEX jobs_in_motion ON jobs (state, run_at)
    WHERE state IN ('SCHEDULED', 'RETRYING', 'DISPATCHED', 'PUBLISHING');

DROP INDEX jobs_by_connection;
CREATE INDEX jobs_open_by_connection ON jobs (tenant_id, connection_id, state)
    WHERE state IN ('PENDING', 'SCHEDULED', 'AWAITING_APPROVAL', 'DISPATCHED', 'PUBLISHING',
                    'RETRYING', 'PAUSED');
