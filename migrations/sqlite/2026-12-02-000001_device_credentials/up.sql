-- How a device authenticates: with a certificate of our CA (the default), or with a
-- client id and secret (password devices; the secret's hash is in mqtt_credentials
-- and serves both MQTT and POST /iot/token). A model can make either the default.
ALTER TABLE devices ADD COLUMN credential TEXT NOT NULL DEFAULT 'certificate';
ALTER TABLE device_models ADD COLUMN credential TEXT NOT NULL DEFAULT 'certificate';
