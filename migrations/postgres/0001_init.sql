-- 0001_init (PostgreSQL): the schema of migrations/0001_init.sql in PostgreSQL's dialect.
--
-- The same tables and columns, so every store statement reads the same on both backends:
-- documents stay JSON text (what GET returns, byte for byte), integers are BIGINT (SQLite's
-- INTEGER is 64-bit), and `rowid` is an explicit identity column because searches fall back to
-- insertion order as SQLite's rowid gives it. _seq_no comes from a sequence, not from a counter
-- row, so writers on several nodes never queue behind one row lock.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO meta(key, value) VALUES('seq_no', '0');
CREATE SEQUENCE mlr_seq_no;

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE model_groups (
    rowid             BIGINT GENERATED ALWAYS AS IDENTITY,
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    latest_version    BIGINT NOT NULL DEFAULT 0,
    access            TEXT,
    owner             TEXT,
    created_time      BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    version           BIGINT NOT NULL DEFAULT 1,
    seq_no            BIGINT NOT NULL DEFAULT 0,
    doc               TEXT NOT NULL
);

CREATE TABLE connectors (
    rowid             BIGINT GENERATED ALWAYS AS IDENTITY,
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    owner             TEXT,
    created_time      BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    version           BIGINT NOT NULL DEFAULT 1,
    seq_no            BIGINT NOT NULL DEFAULT 0,
    doc               TEXT NOT NULL,
    credential        TEXT
);
CREATE INDEX connectors_name ON connectors(name);

CREATE TABLE models (
    rowid             BIGINT GENERATED ALWAYS AS IDENTITY,
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    model_group_id    TEXT REFERENCES model_groups(id),
    connector_id      TEXT REFERENCES connectors(id),
    model_state       TEXT NOT NULL,
    created_time      BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    last_used_ms      BIGINT,
    ttl_deadline_ms   BIGINT,
    version           BIGINT NOT NULL DEFAULT 1,
    seq_no            BIGINT NOT NULL DEFAULT 0,
    doc               TEXT NOT NULL,
    credential        TEXT
);
CREATE INDEX models_group ON models(model_group_id);
CREATE INDEX models_connector ON models(connector_id);
CREATE INDEX models_state ON models(model_state);
CREATE INDEX models_name ON models(name);
CREATE INDEX models_created ON models(created_time);
CREATE INDEX models_ttl ON models(ttl_deadline_ms) WHERE ttl_deadline_ms IS NOT NULL;

CREATE TABLE tasks (
    rowid            BIGINT GENERATED ALWAYS AS IDENTITY,
    id               TEXT PRIMARY KEY,
    task_type        TEXT NOT NULL,
    state            TEXT NOT NULL,
    model_id         TEXT,
    create_time      BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL,
    lease_until_ms   BIGINT,
    input            TEXT,
    version          BIGINT NOT NULL DEFAULT 1,
    seq_no           BIGINT NOT NULL DEFAULT 0,
    doc              TEXT NOT NULL
);
CREATE INDEX tasks_queue ON tasks(state, create_time);
CREATE INDEX tasks_state ON tasks(state, task_type);
CREATE INDEX tasks_model ON tasks(model_id);
CREATE INDEX tasks_type ON tasks(task_type);
CREATE INDEX tasks_create ON tasks(create_time);

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    backend_roles TEXT NOT NULL DEFAULT '[]',
    roles         TEXT NOT NULL DEFAULT '[]',
    created_time  BIGINT NOT NULL
);

-- Full-text matching as store/search.c's mlr_match() does it for SQLite: tokens are runs of
-- ASCII letters, digits and '_' and of non-ASCII characters; case is ignored. `all_` = 0: any
-- token of the query occurs in the value; 1: every one does. No token in the query: false.
CREATE FUNCTION mlr_tokens(t TEXT) RETURNS TEXT[] LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(x), '{}')
    FROM regexp_split_to_table(lower(t), '[\x01-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]+') AS x
    WHERE x <> ''
$$;
CREATE FUNCTION mlr_match(v TEXT, q TEXT, all_ BIGINT) RETURNS BOOLEAN
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT v IS NOT NULL AND q IS NOT NULL AND cardinality(mlr_tokens(q)) > 0 AND
           CASE WHEN all_ <> 0 THEN mlr_tokens(q) <@ mlr_tokens(v)
                ELSE mlr_tokens(q) && mlr_tokens(v) END
$$;
