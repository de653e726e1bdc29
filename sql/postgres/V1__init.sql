-- Charter issuer schema (PostgreSQL). Times are unix seconds; JSON as JSONB.
CREATE TABLE products (
    slug        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    features    JSONB NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE accounts (
    id          TEXT PRIMARY KEY,
    company     TEXT NOT NULL,
    account     TEXT NOT NULL,
    slug        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE licenses (
    lid            TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    status         TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')),
    starts_at      BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    max_instances  BIGINT NOT NULL,
    terms          JSONB NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE INDEX licenses_account ON licenses (account_id);
CREATE INDEX licenses_created ON licenses (created_at, lid);

CREATE TABLE instances (
    id                 TEXT PRIMARY KEY,
    lid                TEXT NOT NULL REFERENCES licenses(lid),
    url                TEXT NOT NULL,
    dialect            TEXT NOT NULL,
    push_enabled       BOOLEAN NOT NULL,
    last_jti           TEXT,
    last_issued_at     BIGINT,
    next_renewal_at    BIGINT,
    usage              JSONB,
    usage_reported_at  BIGINT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    UNIQUE (lid, url)
);

CREATE TABLE tokens (
    jti           TEXT PRIMARY KEY,
    lid           TEXT NOT NULL REFERENCES licenses(lid),
    instance_id   TEXT NOT NULL,
    kid           TEXT NOT NULL,
    iat           BIGINT NOT NULL,
    nbf           BIGINT NOT NULL,
    exp           BIGINT NOT NULL,
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
