-- Web console sessions, shared by every replica. Only a SHA-256 of the session id
-- (the cookie's value) is stored: a copy of this table cannot sign anybody in.
CREATE TABLE console_sessions (
    id_hash      TEXT PRIMARY KEY,
    token_name   TEXT NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL
);
CREATE INDEX console_sessions_last_seen_idx ON console_sessions (last_seen_at);
