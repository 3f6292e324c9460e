"""Tasks, deploy/undeploy and durability of the task queue (spec README §4, §5;
mlcommons-reference.md §6.6, §6.7, §8, §9; clients.md §4 items 20-27).

Each test starts the real binary. Where a test needs a task in a particular state that the API
cannot produce (a CREATED task left by a previous process, a RUNNING task whose lease ran out), it
writes the row itself, copying the shape of a row the server wrote: with Python's sqlite3 module,
or with psql when the suite runs against PostgreSQL (the harness's MLRELAY_TEST_PG).
"""

import base64
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import threading
import time

from harness import PG_BASE

ML = "/_plugins/_ml"
SETTINGS = "/_cluster/settings"
TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"
REMOTE_ON = "plugins.ml_commons.remote_inference.enabled"
AUTO_REDEPLOY = "plugins.ml_commons.model_auto_redeploy.enable"
RETENTION = "mlrelay.task_retention"
AUTO_ID = re.compile(r"^[A-Za-z0-9_-]{20}$")

REMOTE_DISABLED = ("Remote Inference is currently disabled. To enable it, update the setting "
                   "\"plugins.ml_commons.remote_inference_enabled\" to true.")
DELETE_DEPLOYED = ("Model cannot be deleted in deploying or deployed state. Try undeploy model "
                   "first then delete")
TASK_FIELDS = {"model_id", "task_type", "function_name", "state", "worker_node", "create_time",
               "last_update_time", "is_async"}
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "COMPLETED_WITH_ERROR")


# -- small helpers ----------------------------------------------------------------------------

def now_ms():
    return int(time.time() * 1000)


def expect_error(r, status, reason=None, contains=None):
    """Asserts an OpenSearch error envelope with @status (and exact @reason / substring)."""
    assert r.status == status, (status, reason, r)
    _, why = r.error()
    if reason is not None:
        assert why == reason, (reason, r)
    if contains is not None:
        assert contains.lower() in why.lower(), (contains, r)
    return why


def put_settings(s, persistent):
    r = s.put(SETTINGS, {"persistent": persistent})
    assert r.status == 200, (persistent, r)


def connector_body(name="tasks connector", key="sk-tasks-secret"):
    return {
        "name": name,
        "version": "1",
        "protocol": "http",
        "parameters": {"model": "m"},
        "credential": {"key": key},
        "actions": [{"action_type": "predict", "method": "POST",
                     "url": "http://127.0.0.1:9/v1/x",
                     "headers": {"Authorization": "Bearer ${credential.key}"},
                     "request_body": "{ \"input\": \"${parameters.input}\" }"}],
    }


def make_connector(s):
    """Trusts 127.0.0.1 and creates a connector; returns its id."""
    put_settings(s, {TRUSTED: ["^http://127\\.0\\.0\\.1:.*$"]})
    r = s.post(ML + "/connectors/_create", connector_body())
    assert r.status == 200, r
    return r.json["connector_id"]


def register(s, cid, name="tasks model", query=""):
    """Registers a remote model on connector @cid; returns the response JSON."""
    body = {"name": name, "function_name": "remote", "description": "d", "connector_id": cid}
    r = s.post(ML + "/models/_register" + query, body)
    assert r.status == 200, r
    j = r.json
    assert set(j) == {"task_id", "status", "model_id"}, r
    assert j["status"] == "CREATED", r
    assert AUTO_ID.match(j["task_id"]) and AUTO_ID.match(j["model_id"]), r
    return j


def get_task(s, tid):
    r = s.get(ML + "/tasks/" + tid)
    assert r.status == 200, (tid, r)
    return r.json


def get_model(s, mid):
    r = s.get(ML + "/models/" + mid)
    assert r.status == 200, (mid, r)
    return r.json


def wait_task(s, tid, state="COMPLETED", timeout=5.0):
    """Polls the task until it reaches a final state; asserts it is @state. Returns the doc."""
    deadline = time.time() + timeout
    doc = None
    while time.time() < deadline:
        r = s.get(ML + "/tasks/" + tid)
        if r.status == 200:
            doc = r.json
            if doc.get("state") in FINAL:
                break
        time.sleep(0.02)
    assert doc is not None and doc.get("state") == state, (tid, state, doc)
    return doc


def wait_model_state(s, mid, state, timeout=5.0):
    deadline = time.time() + timeout
    doc = None
    while time.time() < deadline:
        doc = get_model(s, mid)
        if doc.get("model_state") == state:
            return doc
        time.sleep(0.02)
    raise AssertionError("model %s not %s within %ss: %r" % (mid, state, timeout, doc))


def node_id(s):
    with open(os.path.join(s.data_dir, "node.id")) as f:
        nid = f.read().strip()
    assert AUTO_ID.match(nid), nid
    return nid


def deploy(s, mid, **kw):
    """POST _deploy with no body and no content type (the JS client); asserts COMPLETED."""
    r = s.post(ML + "/models/%s/_deploy" % mid, **kw)
    assert r.status == 200, r
    assert set(r.json) == {"task_id", "task_type", "status"}, r
    assert r.json["task_type"] == "DEPLOY_MODEL", r
    assert r.json["status"] == "COMPLETED", r
    assert AUTO_ID.match(r.json["task_id"]), r
    return r.json["task_id"]


def undeploy(s, mid, path="_undeploy", **kw):
    r = s.post(ML + "/models/%s/%s" % (mid, path), **kw)
    assert r.status == 200, r
    assert r.json == {node_id(s): {"stats": {mid: "undeployed"}}}, r
    return r


def check_deployed(s, mid, t0):
    doc = get_model(s, mid)
    assert doc["model_state"] == "DEPLOYED", doc
    assert doc["planning_worker_node_count"] == 1, doc
    assert doc["current_worker_node_count"] == 1, doc
    assert doc["planning_worker_nodes"] == [node_id(s)], doc
    assert doc["deploy_to_all_nodes"] is True, doc
    t = doc["last_deployed_time"]
    assert isinstance(t, int) and t0 - 5000 <= t <= now_ms() + 5000, doc
    return doc


def check_undeployed(s, mid):
    doc = get_model(s, mid)
    assert doc["model_state"] == "UNDEPLOYED", doc
    assert doc["planning_worker_node_count"] == 0, doc
    assert doc["current_worker_node_count"] == 0, doc
    assert doc["planning_worker_nodes"] == [], doc
    return doc


def search_tasks(s, query, size=1000):
    r = s.post(ML + "/tasks/_search", {"query": query, "size": size})
    assert r.status == 200, r
    return {hit["_id"]: hit["_source"] for hit in r.json["hits"]["hits"]}


def db_path(s):
    return os.path.join(s.data_dir, "mlrelay.db")


def _sql_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise TypeError(v)
    if isinstance(v, int):
        return str(v)
    return "'" + v.replace("'", "''") + "'"


class Db:
    """Server @s's database, for the rows the API cannot produce: SQLite's file through sqlite3,
    or the server's PostgreSQL database through psql (Python has no PostgreSQL driver here, so
    `?` parameters are inlined as quoted literals; the tests pass only their own values)."""

    def __init__(self, s):
        self.pg_url = s.store_url() if PG_BASE else None
        self.lite = None
        if self.pg_url is None:
            self.lite = sqlite3.connect(db_path(s), timeout=5, isolation_level=None)
            self.lite.execute("PRAGMA busy_timeout = 5000")

    def _psql(self, sql):
        p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d",
                            self.pg_url, "-c", sql], capture_output=True, timeout=60)
        assert p.returncode == 0, "psql failed: %s" % p.stderr.decode()
        return p.stdout.decode()

    def _inline(self, sql, args):
        parts = sql.split("?")
        assert len(parts) == len(args) + 1, sql
        return parts[0] + "".join(_sql_literal(a) + rest for a, rest in zip(args, parts[1:]))

    def rows(self, sql, args=()):
        """The rows of query @sql as dicts of columns."""
        if self.lite is not None:
            cur = self.lite.execute(sql, args)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        out = self._psql("SELECT row_to_json(q)::text FROM (%s) AS q" % self._inline(sql, args))
        return [json.loads(line) for line in out.splitlines() if line]

    def execute(self, sql, args=()):
        if self.lite is not None:
            self.lite.execute(sql, args)
        else:
            self._psql(self._inline(sql, args))

    def integrity_ok(self):
        """SQLite's integrity_check; PostgreSQL keeps its own files sound."""
        if self.lite is None:
            return True
        return self.lite.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

    def close(self):
        if self.lite is not None:
            self.lite.close()


def db_connect(s):
    return Db(s)


def task_row(db, tid):
    """The task row as a dict of columns (doc parsed)."""
    rows = db.rows("SELECT * FROM tasks WHERE id = ?", (tid,))
    assert len(rows) == 1, tid
    out = rows[0]
    out["doc"] = json.loads(out["doc"])
    return out


def insert_task(db, template_id, new_id, state, lease_until_ms=None, model_id=None):
    """Inserts a copy of task @template_id as @new_id in @state (columns and doc alike)."""
    row = task_row(db, template_id)
    doc = row["doc"]
    t = now_ms()
    doc["state"] = state
    doc["create_time"] = t
    doc["last_update_time"] = t
    if model_id is not None:
        doc["model_id"] = model_id
    doc.pop("error", None)
    values = (new_id, doc["task_type"], state, doc.get("model_id"), t, t, lease_until_ms, 1)
    insert = ("INSERT INTO tasks(id, task_type, state, model_id, create_time, last_update_time, "
              "lease_until_ms, version, seq_no, doc) VALUES(?,?,?,?,?,?,?,?,%s,?)")
    if db.lite is None:
        # _seq_no comes from a sequence there, and one statement is its own transaction.
        db.execute(insert % "nextval('mlr_seq_no')", values + (json.dumps(doc),))
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        seq = db.rows("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'seq_no' "
                      "RETURNING CAST(value AS INTEGER) AS seq")[0]["seq"]
        db.execute(insert % "?", values + (seq, json.dumps(doc)))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def set_task_state(db, tid, state, lease_until_ms):
    """Rewrites task @tid's state in the column and the doc, with a lease."""
    doc = task_row(db, tid)["doc"]
    doc["state"] = state
    db.execute("UPDATE tasks SET state = ?, lease_until_ms = ?, doc = ? WHERE id = ?",
               (state, lease_until_ms, json.dumps(doc), tid))


def wait_log(s, text, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in s.log():
            return
        time.sleep(0.02)
    raise AssertionError("log never said %r:\n%s" % (text, s.log()))


# -- register tasks ---------------------------------------------------------------------------

def test_register_task_document(h):
    s = h.server()
    cid = make_connector(s)
    t0 = now_ms()
    reg = register(s, cid)
    task = wait_task(s, reg["task_id"])
    assert set(task) == TASK_FIELDS, task
    assert task["model_id"] == reg["model_id"], task
    assert task["task_type"] == "REGISTER_MODEL", task
    assert task["function_name"] == "REMOTE", task
    assert task["worker_node"] == [node_id(s)], task
    assert task["is_async"] is False, task
    for k in ("create_time", "last_update_time"):
        assert isinstance(task[k], int) and t0 - 5000 <= task[k] <= now_ms() + 5000, task
    assert task["last_update_time"] >= task["create_time"], task
    # The register task is the only task, and search sees it COMPLETED (clients.md item 21).
    tasks = search_tasks(s, {"match_all": {}})
    assert list(tasks) == [reg["task_id"]], tasks
    assert tasks[reg["task_id"]]["state"] == "COMPLETED", tasks
    # Completing the register task leaves the model document as the register wrote it.
    r = s.post(ML + "/models/_search", {"query": {"ids": {"values": [reg["model_id"]]}}})
    assert r.status == 200 and r.json["hits"]["total"]["value"] == 1, r
    hit = r.json["hits"]["hits"][0]
    assert hit["_version"] == 1, hit
    model = hit["_source"]
    assert model["model_state"] == "REGISTERED", model
    assert model["last_updated_time"] == model["created_time"], model


def test_register_task_runs_quickly_many(h):
    s = h.server()
    cid = make_connector(s)
    regs = [register(s, cid, name="m%d" % i) for i in range(20)]
    for reg in regs:
        task = wait_task(s, reg["task_id"])
        assert task["model_id"] == reg["model_id"], task
    done = search_tasks(s, {"bool": {"filter": [{"term": {"task_type": "REGISTER_MODEL"}},
                                                {"term": {"state": "COMPLETED"}}]}})
    assert set(done) == {reg["task_id"] for reg in regs}, done


# -- deploy -----------------------------------------------------------------------------------

def test_deploy_no_body(h):
    s = h.server()
    cid = make_connector(s)
    reg = register(s, cid)
    mid = reg["model_id"]
    wait_task(s, reg["task_id"])
    t0 = now_ms()
    tid = deploy(s, mid)
    assert tid != reg["task_id"]
    task = get_task(s, tid)
    assert set(task) == TASK_FIELDS, task
    assert task["task_type"] == "DEPLOY_MODEL", task
    assert task["state"] == "COMPLETED", task
    assert task["model_id"] == mid, task
    assert task["is_async"] is True, task
    assert task["function_name"] == "REMOTE", task
    assert task["worker_node"] == [node_id(s)], task
    assert task["last_update_time"] >= task["create_time"] >= t0 - 5000, task
    check_deployed(s, mid, t0)


def test_deploy_empty_json_body_and_load_alias(h):
    s = h.server()
    cid = make_connector(s)
    m1 = register(s, cid, name="a")["model_id"]
    m2 = register(s, cid, name="b")["model_id"]
    t0 = now_ms()
    tid = deploy(s, m1, body={})
    assert get_task(s, tid)["state"] == "COMPLETED"
    check_deployed(s, m1, t0)
    # The old _load alias.
    r = s.post(ML + "/models/%s/_load" % m2)
    assert r.status == 200, r
    assert r.json["task_type"] == "DEPLOY_MODEL" and r.json["status"] == "COMPLETED", r
    task = get_task(s, r.json["task_id"])
    assert task["task_type"] == "DEPLOY_MODEL" and task["model_id"] == m2, task
    check_deployed(s, m2, t0)


def test_deploy_unknown_model(h):
    s = h.server()
    cid = make_connector(s)
    register(s, cid)
    before = search_tasks(s, {"match_all": {}})
    for path in ("/models/nope123/_deploy", "/models/nope123/_load"):
        expect_error(s.post(ML + path), 404, "Failed to find model")
    # No task is left behind for the unknown model.
    assert search_tasks(s, {"match_all": {}}).keys() == before.keys()


def test_deploy_twice(h):
    s = h.server()
    cid = make_connector(s)
    mid = register(s, cid)["model_id"]
    t0 = now_ms()
    first = deploy(s, mid)
    second = deploy(s, mid)
    assert first != second
    for tid in (first, second):
        task = get_task(s, tid)
        assert task["state"] == "COMPLETED" and task["task_type"] == "DEPLOY_MODEL", task
    check_deployed(s, mid, t0)
    deploys = search_tasks(s, {"term": {"task_type": "DEPLOY_MODEL"}})
    assert set(deploys) == {first, second}, deploys


def test_deploy_custom_plan_refused(h):
    s = h.server()
    cid = make_connector(s)
    mid = register(s, cid)["model_id"]
    before = get_model(s, mid)
    r = s.post(ML + "/models/%s/_deploy" % mid, {"node_ids": [node_id(s)]})
    expect_error(r, 400, "Don't allow custom deployment plan")
    after = get_model(s, mid)
    assert after == before, (before, after)
    assert search_tasks(s, {"term": {"task_type": "DEPLOY_MODEL"}}) == {}


def test_deploy_remote_inference_disabled(h):
    s = h.server()
    cid = make_connector(s)
    mid = register(s, cid)["model_id"]
    before = get_model(s, mid)
    put_settings(s, {REMOTE_ON: False})
    for path in ("_deploy", "_load"):
        expect_error(s.post(ML + "/models/%s/%s" % (mid, path)), 400, REMOTE_DISABLED)
    assert get_model(s, mid) == before
    assert search_tasks(s, {"term": {"task_type": "DEPLOY_MODEL"}}) == {}
    put_settings(s, {REMOTE_ON: None})
    deploy(s, mid)
    assert get_model(s, mid)["model_state"] == "DEPLOYED"


def test_deploy_undecryptable_credential_fails(h):
    s = h.server()
    cid = make_connector(s)
    mid = register(s, cid)["model_id"]
    nid = node_id(s)
    assert s.stop() == 0
    s.env = {"MLRELAY_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    s.start()
    r = s.post(ML + "/models/%s/_deploy" % mid)
    assert r.status == 200, r
    assert r.json["task_type"] == "DEPLOY_MODEL", r
    task = wait_task(s, r.json["task_id"], "FAILED")
    assert task["task_type"] == "DEPLOY_MODEL" and task["model_id"] == mid, task
    assert isinstance(task["error"], str), task
    err = json.loads(task["error"])
    assert isinstance(err, dict) and set(err) == {nid}, task
    assert "decrypt" in err[nid].lower(), task
    # The secret never shows in the error.
    assert "sk-tasks-secret" not in task["error"], task
    wait_model_state(s, mid, "DEPLOY_FAILED", timeout=2)
    # With the right key again the deploy works.
    assert s.stop() == 0
    s.env = {}
    s.start()
    deploy(s, mid)
    assert get_model(s, mid)["model_state"] == "DEPLOYED"


# -- undeploy ---------------------------------------------------------------------------------

def test_undeploy_shapes(h):
    s = h.server()
    cid = make_connector(s)
    nid = node_id(s)
    ids = [register(s, cid, name="m%d" % i)["model_id"] for i in range(4)]
    for mid in ids:
        deploy(s, mid)
    # No body, no content type.
    undeploy(s, ids[0])
    check_undeployed(s, ids[0])
    # Arbitrary JSON bodies: node ids, a bogus node map.
    undeploy(s, ids[1], body={"node_ids": ["x"]})
    check_undeployed(s, ids[1])
    undeploy(s, ids[2], body={"bogus-node": {"stats": {ids[2]: "deployed"}}})
    check_undeployed(s, ids[2])
    # The _unload alias.
    undeploy(s, ids[3], path="_unload")
    check_undeployed(s, ids[3])
    # Undeploying again is harmless.
    undeploy(s, ids[0])
    check_undeployed(s, ids[0])
    # Unknown ids.
    for path in ("_undeploy", "_unload"):
        r = s.post(ML + "/models/nope123/" + path)
        assert r.status == 200, r
        assert r.json == {nid: {"stats": {"nope123": "not_found"}}}, r
    # The body text itself mentions "undeployed" (what the upstream IT checks).
    r = s.post(ML + "/models/%s/_undeploy" % ids[0], body={"x": 1})
    assert r.status == 200 and b"undeployed" in r.body, r


def test_deploy_undeploy_deploy(h):
    s = h.server()
    cid = make_connector(s)
    mid = register(s, cid)["model_id"]
    t0 = now_ms()
    deploy(s, mid)
    check_deployed(s, mid, t0)
    undeploy(s, mid)
    doc = check_undeployed(s, mid)
    assert isinstance(doc.get("last_undeployed_time"), int), doc
    tid = deploy(s, mid)
    assert get_task(s, tid)["state"] == "COMPLETED"
    check_deployed(s, mid, t0)


def test_delete_deployed_model(h):
    s = h.server()
    cid = make_connector(s)
    mid = register(s, cid)["model_id"]
    deploy(s, mid)
    expect_error(s.delete(ML + "/models/" + mid), 400, DELETE_DEPLOYED)
    assert get_model(s, mid)["model_state"] == "DEPLOYED"
    undeploy(s, mid)
    r = s.delete(ML + "/models/" + mid)
    assert r.status == 200, r
    assert r.json["result"] == "deleted" and r.json["_id"] == mid, r
    expect_error(s.get(ML + "/models/" + mid), 404)


def test_bulk_undeploy(h):
    s = h.server()
    cid = make_connector(s)
    nid = node_id(s)
    a = register(s, cid, name="a")["model_id"]
    b = register(s, cid, name="b")["model_id"]
    keep = register(s, cid, name="keep")["model_id"]
    for mid in (a, b, keep):
        deploy(s, mid)
    r = s.post(ML + "/models/_undeploy", {"model_ids": [a, b, "nope"]})
    assert r.status == 200, r
    assert r.json == {nid: {"stats": {a: "undeployed", b: "undeployed", "nope": "not_found"}}}, r
    check_undeployed(s, a)
    check_undeployed(s, b)
    assert get_model(s, keep)["model_state"] == "DEPLOYED"
    tasks = search_tasks(s, {"term": {"task_type": "UNDEPLOY_MODEL"}})
    by_model = {t["model_id"]: t for t in tasks.values()}
    assert len(tasks) == 3 and set(by_model) == {a, b, "nope"}, tasks
    assert by_model[a]["state"] == "COMPLETED", tasks
    assert by_model[b]["state"] == "COMPLETED", tasks
    assert by_model["nope"]["state"] == "FAILED", tasks
    for t in tasks.values():
        assert t["function_name"] == "REMOTE" and t["worker_node"] == [nid], t
    # The _unload alias.
    r = s.post(ML + "/models/_unload", {"model_ids": [keep]})
    assert r.status == 200, r
    assert r.json == {nid: {"stats": {keep: "undeployed"}}}, r
    check_undeployed(s, keep)


def test_bulk_undeploy_needs_ids(h):
    s = h.server()
    cid = make_connector(s)
    mid = register(s, cid)["model_id"]
    deploy(s, mid)
    msg = "Must set specific model ids to undeploy"
    for body in ({}, {"model_ids": []}, {"node_ids": [node_id(s)]}):
        expect_error(s.post(ML + "/models/_undeploy", body), 400, msg)
    expect_error(s.post(ML + "/models/_undeploy"), 400, msg)
    expect_error(s.post(ML + "/models/_unload", {"model_ids": []}), 400, msg)
    assert get_model(s, mid)["model_state"] == "DEPLOYED"
    assert search_tasks(s, {"term": {"task_type": "UNDEPLOY_MODEL"}}) == {}


# -- register?deploy=true ---------------------------------------------------------------------

def test_register_with_deploy(h):
    s = h.server()
    cid = make_connector(s)
    t0 = now_ms()
    reg = register(s, cid, query="?deploy=true")
    mid = reg["model_id"]
    # Both tasks are committed by the time the response arrives.
    tasks = search_tasks(s, {"term": {"model_id": mid}})
    types = sorted(t["task_type"] for t in tasks.values())
    assert types == ["DEPLOY_MODEL", "REGISTER_MODEL"], tasks
    assert tasks[reg["task_id"]]["task_type"] == "REGISTER_MODEL", tasks
    wait_model_state(s, mid, "DEPLOYED")
    check_deployed(s, mid, t0)
    wait_task(s, reg["task_id"])
    for tid, t in tasks.items():
        done = wait_task(s, tid)
        assert done["is_async"] is (t["task_type"] == "DEPLOY_MODEL"), done
    # Without the flag nothing is deployed.
    other = register(s, cid, name="plain", query="?deploy=false")
    wait_task(s, other["task_id"])
    assert get_model(s, other["model_id"])["model_state"] == "REGISTERED"
    assert len(search_tasks(s, {"term": {"model_id": other["model_id"]}})) == 1


# -- task API ---------------------------------------------------------------------------------

def test_cancel_and_delete_finished_tasks(h):
    s = h.server()
    cid = make_connector(s)
    reg = register(s, cid)
    tid = reg["task_id"]
    wait_task(s, tid)
    r = s.post(ML + "/tasks/%s/_cancel" % tid)
    expect_error(r, 400, "Task is already in a final state [COMPLETED]")
    assert get_task(s, tid)["state"] == "COMPLETED"
    expect_error(s.post(ML + "/tasks/nope123/_cancel"), 404, "Failed to find task")
    # A FAILED task is final too.
    r = s.post(ML + "/models/_undeploy", {"model_ids": ["nope"]})
    assert r.status == 200, r
    failed = list(search_tasks(s, {"term": {"state": "FAILED"}}))
    assert len(failed) == 1, failed
    expect_error(s.post(ML + "/tasks/%s/_cancel" % failed[0]), 400,
                 "Task is already in a final state [FAILED]")
    # Delete a finished task.
    r = s.delete(ML + "/tasks/" + tid)
    assert r.status == 200, r
    assert r.json["result"] == "deleted" and r.json["_id"] == tid, r
    assert r.json["_index"] == ".plugins-ml-task", r
    expect_error(s.get(ML + "/tasks/" + tid), 404, "Failed to find task")
    expect_error(s.post(ML + "/tasks/%s/_cancel" % tid), 404, "Failed to find task")
    # The model stays.
    assert get_model(s, reg["model_id"])["model_state"] == "REGISTERED"


def _cancel_created_task_behind_a_full_queue(h):
    """PostgreSQL: a task row written CREATED is announced by NOTIFY and claimed at once, so a
    CREATED task is made the way a busy server makes them: one worker thread (64 tasks in
    flight) and more slow async predicts than that; the last ones wait CREATED."""
    from test_predict import deploy as deploy_model, model_for, relay
    with relay(h, args=("--config", _threads_config(h))) as (s, up):
        mid = model_for(s, up, "slow/3000")
        deploy_model(s, mid)
        tids = []
        for i in range(72):
            r = s.post(ML + "/models/%s/_predict?async=true" % mid,
                       {"parameters": {"messages": [{"role": "user", "content": "c%d" % i}]}})
            assert r.status == 200, r
            tids.append(r.json["task_id"])
        last = tids[-1]
        assert get_task(s, last)["state"] == "CREATED"
        r = s.post(ML + "/tasks/%s/_cancel" % last)
        assert r.status == 200 and r.json == {"status": "OK"}, r
        assert get_task(s, last)["state"] == "CANCELLED"
        # It stays cancelled while the others run and finish.
        wait_task(s, tids[0], timeout=10)
        wait_task(s, tids[-2], timeout=15)
        assert get_task(s, last)["state"] == "CANCELLED"
        with up.lock:
            sent = [json.loads(r["body"])["messages"][0]["content"] for r in up.requests
                    if r["path"].startswith("/slow")]
        assert "c71" not in sent and "c70" in sent, sorted(sent)[-3:]


def _threads_config(h):
    path = os.path.join(h.tmp, "threads.json")
    with open(path, "w") as f:
        json.dump({"workers.threads": 1}, f)
    return path


def test_cancel_created_task(h):
    """A CREATED task can be cancelled and then never runs. The API leaves no task CREATED for
    long, so the row is written directly while the server runs and cancelled at once; the
    dispatcher claims on a 200 ms tick, so a few attempts are allowed in case a tick wins."""
    if PG_BASE:
        _cancel_created_task_behind_a_full_queue(h)
        return
    s = h.server()
    cid = make_connector(s)
    reg = register(s, cid)
    wait_task(s, reg["task_id"])
    db = db_connect(s)
    cancelled = None
    raced = []
    try:
        for attempt in range(20):
            tid = "cancelme%012d" % attempt
            insert_task(db, reg["task_id"], tid, "CREATED")
            r = s.post(ML + "/tasks/%s/_cancel" % tid)
            if r.status == 200:
                assert r.json == {"status": "OK"}, r
                cancelled = tid
                break
            expect_error(r, 400)
            raced.append(r)
    finally:
        db.close()
    assert cancelled is not None, raced
    task = get_task(s, cancelled)
    assert task["state"] == "CANCELLED", task
    assert task["task_type"] == "REGISTER_MODEL", task
    # It stays cancelled: the dispatcher never runs it (several ticks later).
    time.sleep(0.8)
    assert get_task(s, cancelled)["state"] == "CANCELLED"
    expect_error(s.post(ML + "/tasks/%s/_cancel" % cancelled), 400,
                 "Task is already in a final state [CANCELLED]")
    r = s.delete(ML + "/tasks/" + cancelled)
    assert r.status == 200 and r.json["result"] == "deleted", r
    expect_error(s.get(ML + "/tasks/" + cancelled), 404, "Failed to find task")


def test_running_task_refuses_delete_and_cancel(h):
    """A RUNNING task with a live lease is left alone by the dispatcher; delete → 400 (not 500)
    and cancel → 400; once its lease ends it is claimed again and completes."""
    s = h.server()
    cid = make_connector(s)
    reg = register(s, cid)
    wait_task(s, reg["task_id"])
    db = db_connect(s)
    try:
        insert_task(db, reg["task_id"], "runningtask000000001", "RUNNING",
                    lease_until_ms=now_ms() + 2500)
    finally:
        db.close()
    tid = "runningtask000000001"
    assert get_task(s, tid)["state"] == "RUNNING"
    expect_error(s.delete(ML + "/tasks/" + tid), 400,
                 "Task cannot be deleted in running state. Try after some time.")
    expect_error(s.post(ML + "/tasks/%s/_cancel" % tid), 400)
    time.sleep(0.6)  # a few dispatcher ticks: the live lease keeps it RUNNING
    assert get_task(s, tid)["state"] == "RUNNING"
    task = wait_task(s, tid, timeout=6)
    assert task["model_id"] == reg["model_id"], task
    r = s.delete(ML + "/tasks/" + tid)
    assert r.status == 200 and r.json["result"] == "deleted", r


# -- recovery ---------------------------------------------------------------------------------

def test_created_task_runs_after_restart(h):
    s = h.server()
    cid = make_connector(s)
    reg = register(s, cid)
    wait_task(s, reg["task_id"])
    nid = node_id(s)
    assert s.stop() == 0
    db = db_connect(s)
    try:
        insert_task(db, reg["task_id"], "leftcreated000000001", "CREATED")
        assert task_row(db, "leftcreated000000001")["state"] == "CREATED"
    finally:
        db.close()
    t0 = now_ms()
    s.start()
    task = wait_task(s, "leftcreated000000001")
    assert task["task_type"] == "REGISTER_MODEL" and task["model_id"] == reg["model_id"], task
    assert task["worker_node"] == [nid], task
    assert task["last_update_time"] >= t0, task
    assert get_model(s, reg["model_id"])["model_state"] == "REGISTERED"


def test_running_task_rerun_after_restart(h):
    s = h.server()
    cid = make_connector(s)
    reg = register(s, cid)
    tid = reg["task_id"]
    before = wait_task(s, tid)
    assert s.stop() == 0
    db = db_connect(s)
    try:
        set_task_state(db, tid, "RUNNING", now_ms() + 3600 * 1000)
        row = task_row(db, tid)
        assert row["state"] == "RUNNING" and row["doc"]["state"] == "RUNNING", row
    finally:
        db.close()
    time.sleep(0.01)
    t0 = now_ms()
    s.start()
    task = wait_task(s, tid)
    assert task["last_update_time"] >= t0 > before["last_update_time"], (before, task)
    assert task["create_time"] == before["create_time"], task
    assert task["model_id"] == reg["model_id"], task
    assert "re-running 1 tasks left running by the last process" in s.log(), s.log()


def test_expired_lease_reclaimed_without_restart(h):
    s = h.server()
    cid = make_connector(s)
    reg = register(s, cid)
    wait_task(s, reg["task_id"])
    # Taken before the rows are written: the dispatcher may reclaim the expired task before a
    # slower writer (psql, under PostgreSQL) has returned.
    t0 = now_ms()
    db = db_connect(s)
    try:
        insert_task(db, reg["task_id"], "expiredlease00000001", "RUNNING",
                    lease_until_ms=now_ms() - 1000)
        insert_task(db, reg["task_id"], "livelease00000000001", "RUNNING",
                    lease_until_ms=now_ms() + 3600 * 1000)
    finally:
        db.close()
    task = wait_task(s, "expiredlease00000001", timeout=2)
    assert task["last_update_time"] >= t0, task
    assert task["model_id"] == reg["model_id"], task
    # The one whose lease still runs is left alone.
    time.sleep(0.5)
    assert get_task(s, "livelease00000000001")["state"] == "RUNNING"


# -- restart: redeploy and durability ---------------------------------------------------------

def test_auto_redeploy_disabled(h):
    s = h.server()
    cid = make_connector(s)
    mid = register(s, cid)["model_id"]
    put_settings(s, {AUTO_REDEPLOY: False})
    deploy(s, mid)
    assert get_model(s, mid)["model_state"] == "DEPLOYED"
    assert s.stop() == 0
    s.start()
    doc = wait_model_state(s, mid, "DEPLOY_FAILED", timeout=2)
    assert doc["current_worker_node_count"] == 0, doc
    log = s.log()
    assert any("not redeployed" in line and mid in line for line in log.splitlines()), log
    assert "redeployed 0 of 1 models" in log, log
    # A client deploy brings it back.
    deploy(s, mid)
    assert get_model(s, mid)["model_state"] == "DEPLOYED"


def test_auto_redeploy_on_restart(h):
    s = h.server()
    cid = make_connector(s)
    a = register(s, cid, name="a")["model_id"]
    b = register(s, cid, name="b")["model_id"]
    c = register(s, cid, name="c")["model_id"]
    deploy(s, a)
    deploy(s, b)
    deploy(s, c)
    undeploy(s, c)
    assert s.stop() == 0
    s.start()
    assert "redeployed 2 of 2 models" in s.log(), s.log()
    for mid in (a, b):
        assert get_model(s, mid)["model_state"] == "DEPLOYED"
    assert get_model(s, c)["model_state"] == "UNDEPLOYED"
    # Still undeployable/deletable as usual.
    expect_error(s.delete(ML + "/models/" + a), 400, DELETE_DEPLOYED)
    undeploy(s, a)


def test_task_retention_purge(h):
    """mlrelay.task_retention: the purge runs 5 s after start (then every 60 s) and removes
    finished tasks older than the retention; the models stay."""
    t_start = time.time()
    s = h.server()
    cid = make_connector(s)
    put_settings(s, {RETENTION: "1s"})
    reg = register(s, cid)
    tid = reg["task_id"]
    wait_task(s, tid)
    deadline = t_start + 8.5
    while time.time() < deadline:
        r = s.get(ML + "/tasks/" + tid)
        if r.status == 404:
            break
        assert r.status == 200, r
        time.sleep(0.1)
    expect_error(s.get(ML + "/tasks/" + tid), 404, "Failed to find task")
    assert get_model(s, reg["model_id"])["model_state"] == "REGISTERED"
    assert search_tasks(s, {"match_all": {}}) == {}
    assert "purged 1 finished tasks past retention" in s.log(), s.log()


class Client:
    """A keep-alive HTTP connection of its own (one per thread)."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)

    def post(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json"} if body is not None else {}
        self.conn.request("POST", path, body=data, headers=hdrs)
        r = self.conn.getresponse()
        payload = r.read()
        return r.status, json.loads(payload) if payload else None

    def close(self):
        self.conn.close()


def _load(s, cid, threads, stop, acked, errors, with_deploy=False):
    """Starts @threads threads registering (and optionally deploying) models until @stop is set
    or the server goes away; each acknowledgement is appended to @acked."""
    lock = threading.Lock()

    def worker(n):
        c = Client(s.port)
        i = 0
        try:
            while not stop.is_set():
                body = {"name": "load-%d-%d" % (n, i), "function_name": "remote",
                        "connector_id": cid}
                i += 1
                status, j = c.post(ML + "/models/_register", body)
                if status != 200:
                    with lock:
                        errors.append((status, j))
                    return
                with lock:
                    acked.append(("register", j["model_id"], j["task_id"]))
                if with_deploy:
                    status, j2 = c.post(ML + "/models/%s/_deploy" % j["model_id"])
                    if status != 200 or j2.get("status") not in ("COMPLETED", "CREATED"):
                        with lock:
                            errors.append((status, j2))
                        return
                    with lock:
                        acked.append(("deploy", j["model_id"], j2["task_id"]))
        except Exception as e:  # the server went away mid-request
            with lock:
                errors.append(repr(e))
        finally:
            c.close()

    ts = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(threads)]
    for t in ts:
        t.start()
    return ts


def _wait_all_completed(s, task_ids, timeout):
    """Polls task search until every id in @task_ids is COMPLETED; returns the docs."""
    want = set(task_ids)
    deadline = time.time() + timeout
    done = {}
    while time.time() < deadline:
        done = search_tasks(s, {"terms": {"_id": sorted(want)}}, size=10000)
        if set(done) == want and all(d["state"] == "COMPLETED" for d in done.values()):
            return done
        time.sleep(0.1)
    missing = want - set(done)
    bad = {k: v["state"] for k, v in done.items() if v["state"] != "COMPLETED"}
    raise AssertionError("tasks not COMPLETED within %ss: missing %d %r, not completed %r"
                         % (timeout, len(missing), sorted(missing)[:5], bad))


def test_kill9_under_load_loses_nothing(h):  # slow
    s = h.server()
    cid = make_connector(s)
    deployed = register(s, cid, name="deployed before the kill")["model_id"]
    deploy(s, deployed)
    stop = threading.Event()
    acked, errors = [], []
    threads = _load(s, cid, 4, stop, acked, errors)
    deadline = time.time() + 20
    while len(acked) < 400 and time.time() < deadline and not errors:
        time.sleep(0.005)
    assert len(acked) >= 400, (len(acked), errors[:3])
    alive = sum(t.is_alive() for t in threads)
    assert alive == 4, (alive, errors[:3])  # still sending when the kill lands
    s.kill9()
    stop.set()
    for t in threads:
        t.join(10)
    acked = list(acked)
    s.start()
    assert "redeployed 1 of 1 models" in s.log(), s.log()
    assert get_model(s, deployed)["model_state"] == "DEPLOYED"
    models = set()
    for _, mid, _ in acked:
        models.add(mid)
    for mid in sorted(models):
        r = s.get(ML + "/models/" + mid)
        assert r.status == 200, (mid, r)
        assert r.json["model_state"] == "REGISTERED", r
    _wait_all_completed(s, [tid for _, _, tid in acked], timeout=10)
    # Nothing half-written: the database is sound and every model has its register task.
    assert s.stop() == 0
    db = db_connect(s)
    try:
        assert db.integrity_ok()
        orphans = db.rows("SELECT COUNT(*) AS n FROM models m WHERE NOT EXISTS (SELECT 1 FROM "
                          "tasks t WHERE t.model_id = m.id)")[0]["n"]
        assert orphans == 0, orphans
    finally:
        db.close()


def test_sigterm_with_tasks_in_flight(h):
    s = h.server()
    cid = make_connector(s)
    stop = threading.Event()
    acked, errors = [], []
    threads = _load(s, cid, 4, stop, acked, errors, with_deploy=True)
    deadline = time.time() + 20
    while len(acked) < 200 and time.time() < deadline and not errors:
        time.sleep(0.005)
    assert len(acked) >= 200, (len(acked), errors[:3])
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    code = s.wait_exit(timeout=15)
    took = time.time() - t0
    stop.set()
    for t in threads:
        t.join(10)
    assert code == 0, (code, s.log())
    assert took < 10, took
    # Requests caught by the shutdown are answered or dropped, never failed with a 5xx.
    assert not [e for e in errors if isinstance(e, tuple) and e[0] >= 500], errors
    acked = list(acked)
    s.close_conn()
    # In-flight work was finished or re-queued: nothing is left RUNNING, the file is sound.
    db = db_connect(s)
    try:
        assert db.integrity_ok()
        running = db.rows("SELECT id, task_type FROM tasks WHERE state = 'RUNNING'")
        assert running == [], running
    finally:
        db.close()
    s.start()
    regs = [x for x in acked if x[0] == "register"]
    deploys = [x for x in acked if x[0] == "deploy"]
    assert regs and deploys, acked[:3]
    _wait_all_completed(s, [tid for _, _, tid in acked], timeout=10)
    deployed = {mid for _, mid, _ in deploys}
    for _, mid, _ in regs:
        doc = get_model(s, mid)
        assert doc["name"].startswith("load-"), doc
        if mid not in deployed:
            assert doc["model_state"] == "REGISTERED", doc
    for mid in sorted(deployed):
        wait_model_state(s, mid, "DEPLOYED", timeout=2)
