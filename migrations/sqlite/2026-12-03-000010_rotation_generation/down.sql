ALTER TABLE rotations DROP COLUMN generation;
ALTER TABLE rotation_schedule DROP COLUMN cursor_device_id;
ALTER TABLE rotation_schedule DROP COLUMN generation_at;
ALTER TABLE rotation_schedule DROP COLUMN generation;
