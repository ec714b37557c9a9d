-- When the provider reported a message deleted (Telegram deletions); the row is kept.
ALTER TABLE messages ADD COLUMN deleted_at BIGINT;
