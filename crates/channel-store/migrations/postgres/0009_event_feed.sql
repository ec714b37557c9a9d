-- The durable event feed: each event is written in the transaction of the change it reports,
-- with that transaction's id. Transactions commit out of the order of their numbers, so the
-- feed is read in (tx, seq) order and only below the oldest transaction still in flight.
CREATE TABLE channel_events (
    seq        BIGSERIAL PRIMARY KEY,
    tx         BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    at         BIGINT NOT NULL,
    payload    TEXT NOT NULL
);
CREATE INDEX channel_events_order ON channel_events (tx, seq);

-- Named consumers of the feed and what each acknowledged.
CREATE TABLE feed_consumers (
    name          TEXT PRIMARY KEY NOT NULL,
    tx            BIGINT NOT NULL,
    seq           BIGINT NOT NULL,
    registered_at BIGINT NOT NULL,
    seen_at       BIGINT NOT NULL,
    expired       BOOLEAN NOT NULL DEFAULT FALSE
);

-- Everything up to this position was pruned: a read after an older one is refused.
CREATE TABLE feed_pruned (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    tx  BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
INSERT INTO feed_pruned (id, tx, seq) VALUES (1, 0, 0);
