-- The rotation schedule's last run: the cron comes due once per occurrence after it.
CREATE TABLE rotation_schedule (
    name        TEXT PRIMARY KEY,
    last_run_at TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL
);
-- One cycle finds the expired PENDING rotations and the next QUEUED or TIMEOUT
-- devices by index, whatever the size of the fleet.
CREATE INDEX rotations_state_deadline_idx ON rotations (state, deadline_at);
CREATE INDEX rotations_state_queued_idx ON rotations (state, queued_at, device_id);
