-- 0001_init: the first schema of mlrelay.
--
-- Each resource keeps its full document as JSON text in `doc` (what GET returns, minus secrets)
-- plus the fields that are filtered, sorted or joined on as real, indexed columns, so searches
-- run on indexes rather than scanning JSON. Times are epoch milliseconds.

-- Facts about this database: cluster_uuid, seq_no (the last _seq_no handed out), ...
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta(key, value) VALUES('seq_no', '0');

-- Persistent cluster settings (`PUT /_cluster/settings` "persistent"); value is canonical JSON.
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE model_groups (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    latest_version    INTEGER NOT NULL DEFAULT 0,
    access            TEXT,
    owner             TEXT,
    created_time      INTEGER NOT NULL,
    last_updated_time INTEGER NOT NULL,
    version           INTEGER NOT NULL DEFAULT 1, -- _version: 1 on insert, +1 per update
    seq_no            INTEGER NOT NULL DEFAULT 0, -- _seq_no: from the meta counter
    doc               TEXT NOT NULL
);

CREATE TABLE connectors (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    owner             TEXT,
    created_time      INTEGER NOT NULL,
    last_updated_time INTEGER NOT NULL,
    version           INTEGER NOT NULL DEFAULT 1,
    seq_no            INTEGER NOT NULL DEFAULT 0,
    doc               TEXT NOT NULL,          -- without credential
    credential        TEXT                    -- JSON map of AES-256-GCM ciphertexts
);
CREATE INDEX connectors_name ON connectors(name);

CREATE TABLE models (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    model_group_id    TEXT REFERENCES model_groups(id),
    connector_id      TEXT REFERENCES connectors(id),
    model_state       TEXT NOT NULL,
    created_time      INTEGER NOT NULL,
    last_updated_time INTEGER NOT NULL,
    last_used_ms      INTEGER,                -- last predict or deploy, for TTL
    ttl_deadline_ms   INTEGER,                -- when an idle deployed model expires; NULL = never
    version           INTEGER NOT NULL DEFAULT 1,
    seq_no            INTEGER NOT NULL DEFAULT 0,
    doc               TEXT NOT NULL,          -- inline connector without its credential
    credential        TEXT                    -- inline connector's encrypted credential
);
CREATE INDEX models_group ON models(model_group_id);
CREATE INDEX models_connector ON models(connector_id);
CREATE INDEX models_state ON models(model_state);
CREATE INDEX models_name ON models(name);
CREATE INDEX models_created ON models(created_time);
CREATE INDEX models_ttl ON models(ttl_deadline_ms) WHERE ttl_deadline_ms IS NOT NULL;

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    task_type        TEXT NOT NULL,
    state            TEXT NOT NULL,
    model_id         TEXT,
    create_time      INTEGER NOT NULL,
    last_update_time INTEGER NOT NULL,
    lease_until_ms   INTEGER,                 -- RUNNING: the claim expires then
    input            TEXT,                    -- the task's input (async predict body), not shown
    version          INTEGER NOT NULL DEFAULT 1,
    seq_no           INTEGER NOT NULL DEFAULT 0,
    doc              TEXT NOT NULL
);
CREATE INDEX tasks_queue ON tasks(state, create_time);    -- claim order
CREATE INDEX tasks_state ON tasks(state, task_type);      -- search filters
CREATE INDEX tasks_model ON tasks(model_id);
CREATE INDEX tasks_type ON tasks(task_type);
CREATE INDEX tasks_create ON tasks(create_time);

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,              -- PBKDF2-HMAC-SHA256 with salt and iteration count
    backend_roles TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
    roles         TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
    created_time  INTEGER NOT NULL
) WITHOUT ROWID;
