-- The issuer's signing keys, shared by every replica. Each private key is
-- sealed (AES-256-GCM under the master key, associated data naming the
-- kid); the public half is kept as its JWK. States: next (published, not
-- yet signing), current (signs; exactly one), previous (published and
-- verifying), retired (neither; the sealed private key is erased).
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('next', 'current', 'previous', 'retired')),
    sealed_key TEXT NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- The earliest time a next key may sign (created_at + prepublication).
    signs_from BIGINT NOT NULL,
    activated_at BIGINT,
    deactivated_at BIGINT,
    retired_at BIGINT
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys (state) WHERE state = 'current';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next';
-- When a previous key may retire: the latest expiry of the tokens it signed.
CREATE INDEX tokens_kid_exp ON tokens (kid, exp);
