-- What was wrong with a delivered message, or changed to store it (a JSON array of defects,
-- NULL for a message stored as delivered), and an index for listing the degraded ones.
ALTER TABLE messages ADD COLUMN defects TEXT;
CREATE INDEX messages_with_defects ON messages (account_id, created_at) WHERE defects IS NOT NULL;
