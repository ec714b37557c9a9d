-- The operator a conversation is assigned to (the service's own id), claimed with
-- compare-and-set.
ALTER TABLE conversations ADD COLUMN assignee TEXT;
CREATE INDEX conversations_assignee ON conversations (account_id, assignee) WHERE assignee IS NOT NULL;
