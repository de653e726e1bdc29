-- Access control (PostgreSQL): service accounts, their tokens (SHA-256 only,
-- never the secret), and the audit trail. Times are unix seconds.
CREATE TABLE service_accounts (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    login        TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('Viewer', 'Editor', 'Admin')),
    is_disabled  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE service_account_tokens (
    id                  BIGSERIAL PRIMARY KEY,
    service_account_id  BIGINT NOT NULL REFERENCES service_accounts(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    hash                TEXT NOT NULL UNIQUE,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT,
    UNIQUE (service_account_id, name)
);

CREATE TABLE audit_events (
    id           BIGSERIAL PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor_kind   TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target_type  TEXT NOT NULL,
    target_id    TEXT NOT NULL,
    ip           TEXT,
    detail       JSONB
);
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_target ON audit_events (target_type, target_id);
CREATE INDEX audit_events_actor ON audit_events (actor);
