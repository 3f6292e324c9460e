-- 0003_cluster (PostgreSQL): several mlrelay nodes on one database.
--
-- nodes: every node upserts its row about twice a second (heartbeat). A node whose heartbeat is
-- older than the node lease (store.h: STORE_NODE_LEASE_MS) is dead: the RUNNING tasks it claimed
-- (tasks.claimed_by) are claimed again by the others, and it leaves worker_node lists.
-- model_nodes: which node holds which model deployed in memory, as each node reports it; it is
-- what an undeploy answers per node.
-- epochs + triggers: a counter per kind of shared state that every node mirrors (deployments and
-- settings), bumped in the same transaction as the change, so a node that polls it cannot miss a
-- change; pg_notify() on channel `mlrelay` is only a hint that makes nodes look at once (payload
-- `models`, `settings`, `tasks` or `done`). A notification is delivered at commit and folded with equal
-- ones of the same transaction.
ALTER TABLE tasks ADD COLUMN claimed_by TEXT;

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);

CREATE TABLE model_nodes (
    model_id    TEXT NOT NULL,
    node_id     TEXT NOT NULL,
    deployed_ms BIGINT NOT NULL,
    PRIMARY KEY (model_id, node_id)
);
CREATE INDEX model_nodes_node ON model_nodes(node_id);

CREATE TABLE epochs (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO epochs(name, value) VALUES ('models', 0), ('settings', 0);

CREATE FUNCTION mlr_bump_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE epochs SET value = value + 1 WHERE name = TG_ARGV[0];
    PERFORM pg_notify('mlrelay', TG_ARGV[0]);
    RETURN NULL;
END
$$;

CREATE FUNCTION mlr_notify_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mlrelay', TG_ARGV[0]);
    RETURN NULL;
END
$$;

-- Deployments follow a model's state and version while it is or becomes deployed, and its
-- connector's version. Nothing else fires: not registers, not other models' writes, not
-- last-use writes (last_used_ms, ttl_deadline_ms), so busy nodes do not keep each other
-- re-reading the deployed models or queue on the epochs row.
CREATE TRIGGER models_epoch AFTER UPDATE OF model_state, version ON models
    FOR EACH ROW WHEN ((OLD.model_state IN ('DEPLOYED', 'PARTIALLY_DEPLOYED') OR
                        NEW.model_state IN ('DEPLOYED', 'PARTIALLY_DEPLOYED')) AND
                       (OLD.model_state IS DISTINCT FROM NEW.model_state OR
                        OLD.version IS DISTINCT FROM NEW.version))
    EXECUTE FUNCTION mlr_bump_epoch('models');
CREATE TRIGGER models_deleted_epoch AFTER DELETE ON models
    FOR EACH ROW WHEN (OLD.model_state IN ('DEPLOYED', 'PARTIALLY_DEPLOYED'))
    EXECUTE FUNCTION mlr_bump_epoch('models');
CREATE TRIGGER connectors_epoch AFTER DELETE OR UPDATE OF version ON connectors
    FOR EACH STATEMENT EXECUTE FUNCTION mlr_bump_epoch('models');
CREATE TRIGGER settings_epoch AFTER INSERT OR DELETE OR UPDATE ON settings
    FOR EACH STATEMENT EXECUTE FUNCTION mlr_bump_epoch('settings');
-- New work: a task written CREATED (inserted, or put back by a stopping node).
CREATE TRIGGER tasks_created AFTER INSERT OR UPDATE OF state ON tasks
    FOR EACH ROW WHEN (NEW.state = 'CREATED') EXECUTE FUNCTION mlr_notify_tasks('tasks');
-- A task ended: a client of another node may be waiting for it (a deploy answers when its task
-- is done, whichever node ran it). Folded to one notification per transaction.
CREATE TRIGGER tasks_done AFTER UPDATE OF state ON tasks
    FOR EACH ROW WHEN (NEW.state IN ('COMPLETED', 'FAILED', 'CANCELLED', 'COMPLETED_WITH_ERROR'))
    EXECUTE FUNCTION mlr_notify_tasks('done');
