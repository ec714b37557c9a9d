-- The provider's configuration of an account (JSON; never secrets, which stay in the
-- encrypted account state). `null` for accounts created before providers had one.
ALTER TABLE accounts ADD COLUMN config TEXT NOT NULL DEFAULT 'null';
