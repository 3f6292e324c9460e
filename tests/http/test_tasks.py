"""Tasks, deploy/undeploy and durability of the task queue (spec README §4, §5;
mlcommons-reference.md §6.6, §6.7, §8, §9; clients.md §4 items 20-27).

Each test starts the real binary. Where a test needs a task in a particular state that the API
cannot produce (a CREATED task left by a previous process, a RUNNING task whose lease ran out), it
writes the row with Python's sqlite3 module, copying the shape of a row the server wrote itself.
"""

import base64
import json
import os
import re
import signal
import sqlite3
import threading
import time

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


def db_connect(s):
    db = sqlite3.connect(db_path(s), timeout=5, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 5000")
    return db


def task_row(db, tid):
    """The task row as a dict of columns (doc parsed)."""
    cur = db.execute("SELECT * FROM tasks WHERE id = ?", (tid,))
    row = cur.fetchone()
    assert row is not None, tid
    out = dict(zip([d[0] for d in cur.description], row))
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
    db.execute("BEGIN IMMEDIATE")
    try:
        seq = db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'seq_no' "
                         "RETURNING CAST(value AS INTEGER)").fetchone()[0]
        db.execute("INSERT INTO tasks(id, task_type, state, model_id, create_time, "
                   "last_update_time, lease_until_ms, version, seq_no, doc) "
                   "VALUES(?,?,?,?,?,?,?,?,?,?)",
                   (new_id, doc["task_type"], state, doc.get("model_id"), t, t, lease_until_ms, 1,
                    seq, json.dumps(doc)))
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
    assert get_model(s, reg["model_id"])["model_state"] == "REGISTERED"


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
    assert get_model(s, mid) == before
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


