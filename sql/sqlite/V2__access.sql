-- Access control (SQLite): service accounts, their tokens (SHA-256 only, never
-- the secret), and the audit trail. Times are unix seconds.
CREATE TABLE service_accounts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT NOT NULL UNIQUE,
    login        TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('Viewer', 'Editor', 'Admin')),
    is_disabled  INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE service_account_tokens (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    service_account_id  INTEGER NOT NULL REFERENCES service_accounts(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    hash                TEXT NOT NULL UNIQUE,
    created_at          INTEGER NOT NULL,
    expires_at          INTEGER,
    UNIQUE (service_account_id, name)
);

CREATE TABLE audit_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    actor_kind   TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target_type  TEXT NOT NULL,
    target_id    TEXT NOT NULL,
    ip           TEXT,
    detail       TEXT
);
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_target ON audit_events (target_type, target_id);
CREATE INDEX audit_events_actor ON audit_events (actor);
