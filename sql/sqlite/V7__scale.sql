-- Scale (issue 17): every list is ordered by a key an index holds, and
-- every documented filter has an index that also gives that order, so a
-- page (first or after a cursor) reads only its own rows.

-- The audit trail, newest first by (at, id): by actor, by action, by
-- target id (alone or with its type); a time range alone uses
-- audit_events_at (at, id).
DROP INDEX audit_events_actor;
DROP INDEX audit_events_target;
CREATE INDEX audit_events_actor ON audit_events (actor, at, id);
CREATE INDEX audit_events_action ON audit_events (action, at, id);
CREATE INDEX audit_events_target ON audit_events (target_id, at, id);

-- A license's token history, newest first by (iat, jti); and the oldest
-- tokens first, for pruning (--token-history-days).
DROP INDEX tokens_license;
CREATE INDEX tokens_license ON tokens (lid, iat, jti);
CREATE INDEX tokens_iat ON tokens (iat);

-- Licenses of an account, accounts, and a license's instances, oldest first.
DROP INDEX licenses_account;
CREATE INDEX licenses_account ON licenses (account_id, created_at, lid);
CREATE INDEX accounts_created ON accounts (created_at, id);
CREATE INDEX instances_license ON instances (lid, created_at, id);
