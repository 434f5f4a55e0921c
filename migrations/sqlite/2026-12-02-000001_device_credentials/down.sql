ALTER TABLE device_models DROP COLUMN credential;
ALTER TABLE devices DROP COLUMN credential;
