-- 0002_batch_results (PostgreSQL): migrations/0002_batch_results.sql in PostgreSQL's dialect.
CREATE TABLE batch_results (
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    first_index BIGINT NOT NULL,
    n_items     BIGINT NOT NULL,
    n_failed    BIGINT NOT NULL,
    results     TEXT NOT NULL
);
CREATE UNIQUE INDEX batch_results_key ON batch_results(task_id, first_index);
