-- Renewal push: delivery state per instance, credentials (encrypted), leases.
ALTER TABLE instances ADD COLUMN credentials TEXT;
ALTER TABLE instances ADD COLUMN token_expires_at INTEGER;
ALTER TABLE instances ADD COLUMN push_next_at INTEGER;
ALTER TABLE instances ADD COLUMN push_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN push_last_error TEXT;
ALTER TABLE instances ADD COLUMN push_last_ok_at INTEGER;
ALTER TABLE instances ADD COLUMN push_at_risk INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN push_pending_jti TEXT;
ALTER TABLE instances ADD COLUMN removal_pending INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN lease_owner TEXT;
ALTER TABLE instances ADD COLUMN lease_until INTEGER;
CREATE INDEX instances_push_due ON instances (push_next_at) WHERE push_enabled = 1;
