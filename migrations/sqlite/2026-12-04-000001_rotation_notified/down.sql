ALTER TABLE rotations DROP COLUMN notified_at;
