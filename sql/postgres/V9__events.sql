-- Events and webhooks. An event is recorded once, in the transaction of
-- the change that caused it (an outbox: none is lost when the process dies
-- after the change, none exists for a change that rolled back), and its
-- deliveries to the subscribed endpoints are queued in that transaction.
CREATE TABLE events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The message id receivers see as `webhook-id` (msg_<uuid>).
    uid TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    at BIGINT NOT NULL,
    payload JSONB NOT NULL
);
CREATE INDEX events_at ON events (at);

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    description TEXT NOT NULL,
    -- The subscribed event types as a JSON array (shown); matched through
    -- webhook_subscriptions.
    event_types JSONB NOT NULL,
    enabled BOOLEAN NOT NULL,
    -- Sealed with the master key. After a rotation the previous secret
    -- signs too until previous_until.
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_until BIGINT,
    disabled_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1
);
CREATE TABLE webhook_subscriptions (
    event_type TEXT NOT NULL,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    PRIMARY KEY (event_type, webhook_id)
);
CREATE TABLE webhook_deliveries (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event_id BIGINT NOT NULL REFERENCES events(id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    last_status BIGINT,
    last_error TEXT,
    last_attempt_at BIGINT,
    created_at BIGINT NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at, id);

-- Time-driven transitions already announced (`expiring`, `expired`), with
-- the expiry they were announced for: each is announced once per license
-- and expiry, by whichever replica gets there first.
CREATE TABLE license_notices (
    lid TEXT NOT NULL REFERENCES licenses(lid),
    kind TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (lid, kind)
);
-- The active licenses by expiry (the scheduler's expiring and expired checks).
CREATE INDEX licenses_active_expiry ON licenses (expires_at) WHERE status = 'active';

-- Over its included counts since when, and by how much (JSON), or NULL.
ALTER TABLE licenses ADD COLUMN over_limit JSONB;

CREATE INDEX licenses_over_limit ON licenses (lid) WHERE over_limit IS NOT NULL;
-- The licenses with reports in a time range (the over-limit check).
CREATE INDEX usage_reports_at ON usage_reports (at);

-- Usage reports older than the retention, rolled up into one row per
-- instance and day with each counter's maximum.
ALTER TABLE usage_reports ADD COLUMN daily BOOLEAN NOT NULL DEFAULT FALSE;

-- Usage per license, instance and UTC day (each counter's maximum and last
-- value), summarized from the reports by the prune job once a day has
-- ended: day and month series read these instead of every report. The
-- setting usage_days_before says up to which day they are complete.
CREATE TABLE usage_days (
    lid TEXT NOT NULL,
    day BIGINT NOT NULL,
    instance_id TEXT NOT NULL,
    counters JSONB NOT NULL,
    PRIMARY KEY (lid, day, instance_id)
);
