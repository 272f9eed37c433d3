-- Which process runs an action: the worker key of its liveness lock (bot/core/leases.py). With
-- several processes, a running action whose process is gone is told apart from one still
-- running elsewhere by whether that key's lock is held; NULL for runs from before.
ALTER TABLE actions ADD COLUMN runner integer;
CREATE INDEX actions_running ON actions (started_at) WHERE status = 'running';
