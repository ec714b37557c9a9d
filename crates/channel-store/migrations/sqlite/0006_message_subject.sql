-- The subject a service gave a send (email).
ALTER TABLE messages ADD COLUMN subject TEXT;
