-- Sessions of the web portal (issue 14), shared by every replica. A row is
-- keyed by the SHA-256 (hex) of the random id in the cookie, never the id
-- itself; it ends after 30 minutes idle (last_seen_at) or 12 hours
-- (created_at), and on logout.
CREATE TABLE portal_sessions (
    id_hash            TEXT PRIMARY KEY,
    actor_kind         TEXT NOT NULL,
    actor              TEXT NOT NULL,
    service_account_id INTEGER,
    token_id           INTEGER,
    role               TEXT NOT NULL,
    csrf               TEXT NOT NULL,
    ip                 TEXT,
    created_at         INTEGER NOT NULL,
    last_seen_at       INTEGER NOT NULL
);
CREATE INDEX portal_sessions_last_seen ON portal_sessions (last_seen_at);
