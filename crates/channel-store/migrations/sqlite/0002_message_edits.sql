-- The provider's time of the latest edit of a message's text (Telegram edits).
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
