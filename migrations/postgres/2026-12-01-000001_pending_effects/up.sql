-- Side effects outside the database (broker access, the broker's CRL, the cloud
-- registry) that a committed change still has to apply. Written in the same
-- transaction as the change, removed once applied; a reconciler re-applies what a
-- crash or an unreachable component left behind. Each row says what to bring in
-- line with the registry, not what to do, so applying one twice or late is safe.
CREATE TABLE pending_effects (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    device_id       TEXT,
    created_at      TIMESTAMP NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at TIMESTAMP NOT NULL
);
CREATE INDEX pending_effects_next_idx ON pending_effects (next_attempt_at);
