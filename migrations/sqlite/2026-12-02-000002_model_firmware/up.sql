-- The firmware image a device model's devices should run, read from the image's
-- application descriptor at upload. The image itself is a file under assets.dir
-- named by its SHA-256; one row per model at most, gone with the model.
CREATE TABLE model_firmware (
    model_code   TEXT PRIMARY KEY REFERENCES device_models (code) ON DELETE CASCADE,
    version      TEXT NOT NULL,
    sha256       TEXT NOT NULL CHECK (length(sha256) = 64),
    size         BIGINT NOT NULL CHECK (size > 0),
    project      TEXT NOT NULL,
    idf_version  TEXT NOT NULL,
    uploaded_at  TIMESTAMP NOT NULL
);
CREATE INDEX model_firmware_sha256_idx ON model_firmware (sha256);
