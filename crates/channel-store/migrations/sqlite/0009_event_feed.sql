-- The durable event feed: each event is written in the transaction of the change it reports.
-- SQLite has one writer, so the number's order is the commit order and `tx` stays 0.
CREATE TABLE channel_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    tx         INTEGER NOT NULL DEFAULT 0,
    at         INTEGER NOT NULL,
    payload    TEXT NOT NULL
) STRICT;

-- Named consumers of the feed and what each acknowledged.
CREATE TABLE feed_consumers (
    name          TEXT PRIMARY KEY NOT NULL,
    tx            INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,
    seen_at       INTEGER NOT NULL,
    expired       INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Everything up to this position was pruned: a read after an older one is refused.
CREATE TABLE feed_pruned (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    tx  INTEGER NOT NULL,
    seq INTEGER NOT NULL
) STRICT;
INSERT INTO feed_pruned (id, tx, seq) VALUES (1, 0, 0);
