-- Onboard's tables (SQLite dialect of migrations/postgres: same columns).

CREATE TABLE device_models (
    code             TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    publish_topics   TEXT NOT NULL,
    subscribe_topics TEXT NOT NULL,
    max_qos          INTEGER NOT NULL DEFAULT 1 CHECK (max_qos BETWEEN 0 AND 2),
    retain_allowed   BOOLEAN NOT NULL DEFAULT FALSE,
    config           TEXT NOT NULL DEFAULT '{}',
    created_at       TIMESTAMP NOT NULL,
    updated_at       TIMESTAMP NOT NULL
);

CREATE TABLE bootstrap_keys (
    id          TEXT PRIMARY KEY,
    batch       TEXT NOT NULL,
    prefix      TEXT NOT NULL UNIQUE,
    key_hash    TEXT NOT NULL,
    model_code  TEXT REFERENCES device_models (code),
    max_uses    INTEGER NOT NULL CHECK (max_uses > 0),
    uses        INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),
    not_before  TIMESTAMP NOT NULL,
    expires_at  TIMESTAMP NOT NULL,
    active      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMP NOT NULL,
    updated_at  TIMESTAMP NOT NULL,
    CHECK (not_before < expires_at)
);
CREATE INDEX bootstrap_keys_batch_idx ON bootstrap_keys (batch);

CREATE TABLE devices (
    id                TEXT PRIMARY KEY,
    serial            TEXT NOT NULL UNIQUE,
    name              TEXT NOT NULL,
    model_code        TEXT REFERENCES device_models (code),
    location          TEXT NOT NULL DEFAULT '',
    firmware_version  TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL,
    bootstrap_key_id  TEXT REFERENCES bootstrap_keys (id) ON DELETE SET NULL,
    batch             TEXT,
    config            TEXT NOT NULL DEFAULT '{}',
    metadata          TEXT NOT NULL DEFAULT '{}',
    created_at        TIMESTAMP NOT NULL,
    updated_at        TIMESTAMP NOT NULL,
    activated_at      TIMESTAMP,
    last_seen_at      TIMESTAMP,
    decommissioned_at TIMESTAMP
);
CREATE INDEX devices_status_idx ON devices (status);
CREATE INDEX devices_model_idx ON devices (model_code);
CREATE INDEX devices_batch_idx ON devices (batch);

CREATE TABLE certificates (
    id                TEXT PRIMARY KEY,
    device_id         TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    serial            TEXT NOT NULL UNIQUE,
    fingerprint       TEXT NOT NULL,
    subject           TEXT NOT NULL,
    issuer            TEXT NOT NULL,
    key_algorithm     TEXT NOT NULL,
    not_before        TIMESTAMP NOT NULL,
    not_after         TIMESTAMP NOT NULL,
    status            TEXT NOT NULL,
    revoked_at        TIMESTAMP,
    revocation_reason TEXT,
    pem               TEXT NOT NULL,
    created_at        TIMESTAMP NOT NULL
);
CREATE INDEX certificates_device_idx ON certificates (device_id);
CREATE INDEX certificates_status_idx ON certificates (status);

CREATE TABLE credential_bundles (
    id            TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    token_hash    TEXT NOT NULL UNIQUE,
    content       BLOB,
    expires_at    TIMESTAMP NOT NULL,
    downloaded_at TIMESTAMP,
    created_at    TIMESTAMP NOT NULL
);
CREATE INDEX credential_bundles_expires_idx ON credential_bundles (expires_at);

CREATE TABLE mqtt_credentials (
    id            TEXT PRIMARY KEY,
    device_id     TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMP NOT NULL,
    updated_at    TIMESTAMP NOT NULL
);
CREATE INDEX mqtt_credentials_device_idx ON mqtt_credentials (device_id);

CREATE TABLE rotations (
    device_id            TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    state                TEXT NOT NULL,
    queued_at            TIMESTAMP,
    started_at           TIMESTAMP,
    deadline_at          TIMESTAMP,
    completed_at         TIMESTAMP,
    attempts             INTEGER NOT NULL DEFAULT 0,
    old_secret_encrypted BLOB,
    new_certificate_id   TEXT REFERENCES certificates (id) ON DELETE SET NULL,
    last_error           TEXT,
    updated_at           TIMESTAMP NOT NULL
);
CREATE INDEX rotations_state_idx ON rotations (state);

-- No foreign key to devices: the audit trail outlives what it describes.
CREATE TABLE audit_events (
    id          TEXT PRIMARY KEY,
    occurred_at TIMESTAMP NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    reason      TEXT,
    device_id   TEXT,
    serial      TEXT,
    key_prefix  TEXT,
    remote_addr TEXT,
    details     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_device_idx ON audit_events (device_id);
CREATE INDEX audit_events_action_idx ON audit_events (action);
CREATE INDEX audit_events_occurred_idx ON audit_events (occurred_at);

CREATE TABLE crls (
    number      BIGINT PRIMARY KEY,
    this_update TIMESTAMP NOT NULL,
    next_update TIMESTAMP NOT NULL,
    der         BLOB NOT NULL
);
