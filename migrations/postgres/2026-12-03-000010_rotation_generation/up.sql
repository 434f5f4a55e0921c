-- Fleet queueing by generation: a scheduled run (or a fleet trigger) bumps the
-- schedule's generation instead of writing a row per device. A device in service
-- whose rotation record is missing or OK with an older generation is QUEUED; the
-- cycle starts the next ones by device id after `cursor_device_id`.
ALTER TABLE rotation_schedule ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rotation_schedule ADD COLUMN generation_at TIMESTAMP;
ALTER TABLE rotation_schedule ADD COLUMN cursor_device_id TEXT;
-- The generation a device's last rotation was started in.
ALTER TABLE rotations ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
