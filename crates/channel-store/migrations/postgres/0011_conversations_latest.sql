-- The conversations of every account by latest activity (the inbox's main list): a page of 50
-- reads 50 index entries instead of sorting every conversation.
CREATE INDEX conversations_latest ON conversations (last_activity_at, id);
