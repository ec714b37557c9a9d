-- Per-account settings (JSON: lifecycle policy, send rates), read by every worker process.
ALTER TABLE accounts ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
-- When the account was removed; a removed account is neither listed nor found, and its
-- messages stay readable.
ALTER TABLE accounts ADD COLUMN removed_at BIGINT;
