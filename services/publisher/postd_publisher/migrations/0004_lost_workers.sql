-- How many workers stopped while publishing the job (counted by the reconciler), so a
-- job that keeps killing workers is set aside in the dead-letter queue, not retried
-- forever. A replay starts the count again.
ALTER TABLE jobs ADD COLUMN lost_workers integer NOT NULL DEFAULT 0;
