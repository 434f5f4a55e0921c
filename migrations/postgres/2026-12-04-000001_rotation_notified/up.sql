-- When the rotation notification of the current start was acknowledged by the
-- broker; NULL while PENDING and not notified yet (a later cycle retries).
ALTER TABLE rotations ADD COLUMN notified_at TIMESTAMP;
