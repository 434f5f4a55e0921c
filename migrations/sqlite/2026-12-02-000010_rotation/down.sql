DROP INDEX rotations_state_queued_idx;
DROP INDEX rotations_state_deadline_idx;
DROP TABLE rotation_schedule;
