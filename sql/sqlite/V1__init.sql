-- Charter issuer schema (SQLite). Times are unix seconds; JSON as TEXT.
CREATE TABLE products (
    slug        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    features    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    company     TEXT NOT NULL,
    account     TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE licenses (
    lid            TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    status         TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    starts_at      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    max_instances  INTEGER NOT NULL,
    terms          TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
CREATE INDEX licenses_account ON licenses (account_id);
CREATE INDEX licenses_created ON licenses (created_at, lid);

CREATE TABLE instances (
    id                 TEXT PRIMARY KEY,
    lid                TEXT NOT NULL REFERENCES licenses(lid),
    url                TEXT NOT NULL,
    dialect            TEXT NOT NULL,
    push_enabled       INTEGER NOT NULL,
    last_jti           TEXT,
    last_issued_at     INTEGER,
    next_renewal_at    INTEGER,
    usage              TEXT,
    usage_reported_at  INTEGER,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    UNIQUE (lid, url)
);

CREATE TABLE tokens (
    jti           TEXT PRIMARY KEY,
    lid           TEXT NOT NULL REFERENCES licenses(lid),
    instance_id   TEXT NOT NULL,
    kid           TEXT NOT NULL,
    iat           INTEGER NOT NULL,
    nbf           INTEGER NOT NULL,
    exp           INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    renewed_from  TEXT,
    token         TEXT NOT NULL
);
CREATE INDEX tokens_license ON tokens (lid, iat);
CREATE INDEX tokens_renewed_from ON tokens (renewed_from);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
