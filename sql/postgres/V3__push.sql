-- Renewal push: delivery state per instance, credentials (encrypted), leases.
ALTER TABLE instances
    ADD COLUMN credentials TEXT,
    ADD COLUMN token_expires_at BIGINT,
    ADD COLUMN push_next_at BIGINT,
    ADD COLUMN push_attempts BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN push_last_error TEXT,
    ADD COLUMN push_last_ok_at BIGINT,
    ADD COLUMN push_at_risk BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN push_pending_jti TEXT,
    ADD COLUMN removal_pending BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN lease_owner TEXT,
    ADD COLUMN lease_until BIGINT;
CREATE INDEX instances_push_due ON instances (push_next_at) WHERE push_enabled;
