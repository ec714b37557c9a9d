-- channel-store schema, PostgreSQL dialect. Ids are UUID text (collation "C", so that they sort like their bytes), times are milliseconds since the
-- Unix epoch, enums are their stored names, JSON is text.

CREATE TABLE accounts (
    id           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    kind         TEXT COLLATE "C" NOT NULL,
    display_name TEXT COLLATE "C" NOT NULL,
    enabled      BOOLEAN NOT NULL,
    connection   TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX accounts_created ON accounts (created_at, id);

CREATE TABLE account_state (
    account_id TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    key        TEXT COLLATE "C" NOT NULL,
    value      BYTEA NOT NULL,
    PRIMARY KEY (account_id, key)
);

CREATE TABLE identities (
    id           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    account_id   TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    address      TEXT COLLATE "C" NOT NULL,
    display_name TEXT COLLATE "C",
    username     TEXT COLLATE "C",
    contact_id   TEXT COLLATE "C",
    merged_into  TEXT COLLATE "C" REFERENCES identities (id),
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (account_id, address)
);
CREATE INDEX identities_merged_into ON identities (merged_into) WHERE merged_into IS NOT NULL;

CREATE TABLE conversations (
    id               TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    account_id       TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    thread_key       TEXT COLLATE "C" NOT NULL,
    primary_identity TEXT COLLATE "C" NOT NULL REFERENCES identities (id),
    contact_id       TEXT COLLATE "C",
    status           TEXT COLLATE "C" NOT NULL,
    opened_at        BIGINT NOT NULL,
    last_activity_at BIGINT NOT NULL,
    expires_at       BIGINT,
    closed_at        BIGINT,
    version          BIGINT NOT NULL
);
-- At most one active (open or idle) conversation per thread.
CREATE UNIQUE INDEX conversations_one_active ON conversations (account_id, thread_key)
    WHERE status IN ('open', 'idle');
CREATE INDEX conversations_thread ON conversations (account_id, thread_key, opened_at, id);
CREATE INDEX conversations_activity ON conversations (account_id, last_activity_at);
CREATE INDEX conversations_primary_identity ON conversations (primary_identity);

CREATE TABLE messages (
    id              TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    account_id      TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    conversation_id TEXT COLLATE "C" NOT NULL REFERENCES conversations (id),
    identity_id     TEXT COLLATE "C" NOT NULL REFERENCES identities (id),
    direction       TEXT COLLATE "C" NOT NULL,
    origin          TEXT COLLATE "C" NOT NULL,
    provider_id     TEXT COLLATE "C",
    client_key      TEXT COLLATE "C",
    status          TEXT COLLATE "C" NOT NULL,
    text            TEXT COLLATE "C",
    html            TEXT COLLATE "C",
    reply_to        TEXT COLLATE "C",
    attachments     TEXT COLLATE "C" NOT NULL,
    parse_error     TEXT COLLATE "C",
    error           TEXT COLLATE "C",
    sent_at         BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
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
    id               TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    kind             TEXT COLLATE "C" NOT NULL,
    account_id       TEXT COLLATE "C" REFERENCES accounts (id),
    message_id       TEXT COLLATE "C",
    payload          TEXT COLLATE "C" NOT NULL,
    unique_key       TEXT COLLATE "C",
    state            TEXT COLLATE "C" NOT NULL,
    attempt          BIGINT NOT NULL,
    max_attempts     BIGINT NOT NULL,
    run_at           BIGINT NOT NULL,
    leased_by        TEXT COLLATE "C",
    lease_expires_at BIGINT,
    last_error       TEXT COLLATE "C",
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
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
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      TEXT COLLATE "C" NOT NULL REFERENCES jobs (id),
    attempt     BIGINT NOT NULL,
    worker      TEXT COLLATE "C" NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    outcome     TEXT COLLATE "C" NOT NULL,
    error       TEXT COLLATE "C"
);
CREATE INDEX job_attempts_job ON job_attempts (job_id, attempt);

CREATE TABLE leases (
    name       TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    holder     TEXT COLLATE "C" NOT NULL,
    term       BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
