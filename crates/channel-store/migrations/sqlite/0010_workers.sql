-- Worker processes: one row each, written at start and by every heartbeat. Whether a worker
-- is alive is not read from here but from its liveness lock (a file lock beside the database,
-- named after `lock_key`).
CREATE TABLE workers (
    id         TEXT PRIMARY KEY NOT NULL,
    host       TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    version    TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    beat_at    INTEGER NOT NULL,
    loops      TEXT NOT NULL,
    accounts   TEXT NOT NULL,
    lock_key   INTEGER NOT NULL
) STRICT;
