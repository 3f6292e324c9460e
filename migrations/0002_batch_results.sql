-- 0002_batch_results: the results of batch ingestion jobs (BATCH_INGEST tasks, spec §7).
--
-- A job's input is stored once, in tasks.input. Each batch of it that finishes adds one row here,
-- in the same transaction as the progress counters of its task, so after a crash the job resumes
-- with exactly the batches that have no row. The unique key makes a batch recorded twice
-- impossible. `results` comes last in the row so that reading the small columns of many rows
-- (paging, resuming) never reads the large texts, which SQLite keeps in overflow pages.
CREATE TABLE batch_results (
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    first_index INTEGER NOT NULL,   -- index in the job's input of the batch's first item
    n_items     INTEGER NOT NULL,   -- items in the batch
    n_failed    INTEGER NOT NULL,   -- items of them that failed
    results     TEXT NOT NULL       -- JSON array of the items' results, in index order
);
CREATE UNIQUE INDEX batch_results_key ON batch_results(task_id, first_index);
