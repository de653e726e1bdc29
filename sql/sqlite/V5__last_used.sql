-- When each service-account token last authenticated (unix seconds; NULL:
-- never). Written at most once a minute per token.
ALTER TABLE service_account_tokens ADD COLUMN last_used_at INTEGER;
