-- channel-store schema, SQLite dialect. Ids are UUID text, times are milliseconds since the
-- Unix epoch, enums are their stored names, JSON is text.

CREATE TABLE accounts (
    id           TEXT PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL,
    display_name TEXT NOT NULL,
    enabled      INTEGER NOT NULL,
    connection   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX accounts_created ON accounts (created_at, id);

CREATE TABLE account_state (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    PRIMARY KEY (account_id, key)
) STRICT;

CREATE TABLE identities (
    id           TEXT PRIMARY KEY NOT NULL,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    address      TEXT NOT NULL,
    display_name TEXT,
    username     TEXT,
    contact_id   TEXT,
    merged_into  TEXT REFERENCES identities (id),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (account_id, address)
) STRICT;
CREATE INDEX identities_merged_into ON identities (merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE conversations (
    id               TEXT PRIMARY KEY NOT NULL,
    account_id       TEXT NOT NULL REFERENCES accounts (id),
    thread_key       TEXT NOT NULL,
    primary_identity TEXT NOT NULL REFERENCES identities (id),
    contact_id       TEXT,
    status           TEXT NOT NULL,
    opened_at        INTEGER NOT NULL,
    last_activity_at INTEGER NOT NULL,
    expires_at       INTEGER,
    closed_at        INTEGER,
    version          INTEGER NOT NULL
) STRICT;
-- At most one active (open or idle) conversation per thread.
CREATE UNIQUE INDEX conversations_one_active ON conversations (account_id, thread_key)
    WHERE status IN ('open', 'idle');
CREATE INDEX conversations_thread ON conversations (account_id, thread_key, opened_at, id);
CREATE INDEX conversations_activity ON conversations (account_id, last_activity_at);
CREATE INDEX conversations_primary_identity ON conversations (primary_identity);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY NOT NULL,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    identity_id     TEXT NOT NULL REFERENCES identities (id),
    direction       TEXT NOT NULL,
    origin          TEXT NOT NULL,
    provider_id     TEXT,
    client_key      TEXT,
    status          TEXT NOT NULL,
    text            TEXT,
    html            TEXT,
    reply_to        TEXT,
    attachments     TEXT NOT NULL,
    parse_error     TEXT,
    error           TEXT,
    sent_at         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;
-- Deduplication: a provider id is stored once per account.
CREATE UNIQUE INDEX messages_provider_id ON messages (account_id, provider_id)
    WHERE provider_id IS NOT NULL;
CREATE INDEX messages_client_key ON messages (account_id, client_key)
    WHERE client_key IS NOT NULL;
-- One outbound message per client key: the echo of a send finds exactly one.
CREATE UNIQUE INDEX messages_outbound_client_key ON messages (account_id, client_key)
    WHERE client_key IS NOT NULL AND direction = 'outbound';
CREATE INDEX messages_conversation ON messages (conversation_id, sent_at, id);
CREATE INDEX messages_identity ON messages (identity_id);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    kind             TEXT NOT NULL,
    account_id       TEXT REFERENCES accounts (id),
    message_id       TEXT,
    payload          TEXT NOT NULL,
    unique_key       TEXT,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    run_at           INTEGER NOT NULL,
    leased_by        TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) STRICT;
-- At most one unfinished job per unique key.
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('available', 'running', 'retryable');
-- Partial indexes only, so that a claim or a completion touches few index pages: the
-- claimable jobs, the running ones (rescue), and the dead letter. Listing jobs in another
-- state scans the table.
CREATE INDEX jobs_claimable ON jobs (run_at, id) WHERE state IN ('available', 'retryable');
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_discarded ON jobs (created_at, id) WHERE state = 'discarded';
CREATE INDEX jobs_message ON jobs (message_id) WHERE message_id IS NOT NULL;

CREATE TABLE job_attempts (
    seq         INTEGER PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    attempt     INTEGER NOT NULL,
    worker      TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    outcome     TEXT NOT NULL,
    error       TEXT
) STRICT;
CREATE INDEX job_attempts_job ON job_attempts (job_id, attempt);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    term       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
