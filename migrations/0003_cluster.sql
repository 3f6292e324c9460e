-- 0003_cluster: which node claimed a task.
--
-- With several nodes on one database (the PostgreSQL backend) a RUNNING task is re-run by
-- another node once its lease runs out or its node stops beating (see migrations/postgres/
-- 0003_cluster.sql); at start-up a node re-queues only the tasks it claimed itself. The SQLite
-- store has one node, so there every RUNNING task at start-up is this node's.
ALTER TABLE tasks ADD COLUMN claimed_by TEXT;
