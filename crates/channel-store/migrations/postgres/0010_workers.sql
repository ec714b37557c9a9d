-- Worker processes: one row each, written at start and by every heartbeat. Whether a worker
-- is alive is not read from here but from its liveness lock: the session-level advisory lock
-- `lock_key`, held by a connection of its own for as long as the process lives.
CREATE TABLE workers (
    id         TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    host       TEXT NOT NULL,
    pid        BIGINT NOT NULL,
    version    TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    beat_at    BIGINT NOT NULL,
    loops      TEXT NOT NULL,
    accounts   TEXT NOT NULL,
    lock_key   BIGINT NOT NULL
);
