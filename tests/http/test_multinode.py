"""Several nodes on one PostgreSQL store (issue 10): three mlrelay processes share the task queue,
the deployments and the settings. Changes reach every node within one heartbeat (500 ms) by
design; the waits below allow PROPAGATE_S so that a loaded CI machine does not fail them, and
bench/cluster.py measures the real propagation time. These cases run only as pg.multinode.* ctests (they skip without
MLRELAY_TEST_PG); every other black-box case also runs against PostgreSQL, one node.
"""

import base64
import json
import os
import threading
import time

from harness import pg_only, psql
from test_predict import (ML, SETTINGS, connector, create_connector, deploy, get_model,
                          predict, predict_ok, put_settings, register, wait_task)
from upstream import Upstream

TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"
PRIVATE_IP = "plugins.ml_commons.connector.private_ip_enabled"
CHAT = {"messages": [{"role": "user", "content": "hi"}]}
PROPAGATE_S = 3.0


def cluster(h, n=3, env=None):
    """@n nodes on one fresh database, sharing one master key (credentials are sealed by one
    node and opened by another), and a mock upstream they all trust."""
    pg_only()
    db = "mlrc_%d_%d" % (os.getpid(), int(time.time() * 1000) % 100000000)
    key = base64.b64encode(os.urandom(32)).decode()
    e = {"MLRELAY_MASTER_KEY": key}
    e.update(env or {})
    nodes = [h.server(env=e, pg_db=db) for _ in range(n)]
    up = Upstream()
    put_settings(nodes[0], {TRUSTED: ["^http://127\\.0\\.0\\.1:.*$"], PRIVATE_IP: True})
    return nodes, up, db


def wait_for(what, fn, timeout=5.0):
    """Polls @fn until it returns a true value; returns it."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def chat_model(s, up, path="v1/chat/completions", **extra):
    return register(s, create_connector(s, connector(up, path)), **extra)


def stored_node_ids(db):
    out = psql("SELECT id FROM nodes ORDER BY id", db)
    return [line for line in out.split("\n") if line]


def count(db, sql):
    return int(psql(sql, db).strip())


def async_predict(s, mid, text):
    r = s.post(ML + "/models/%s/_predict?async=true" % mid,
               {"parameters": {"messages": [{"role": "user", "content": text}]}})
    assert r.status == 200, r
    return r.json["task_id"]


def test_nodes_see_each_other(h):
    nodes, up, db = cluster(h)
    try:
        ids = wait_for("three live nodes", lambda: len(stored_node_ids(db)) == 3 and
                       stored_node_ids(db))
        # A model deployed through one node lists every live node in worker_node.
        mid = chat_model(nodes[0], up)
        r = nodes[0].post(ML + "/models/%s/_deploy" % mid)
        assert r.status == 200, r
        task = wait_task(nodes[1], r.json["task_id"])
        assert sorted(task["worker_node"]) == ids, (task, ids)
        m = get_model(nodes[2], mid)
        assert m["model_state"] == "DEPLOYED", m
        assert sorted(m["planning_worker_nodes"]) == ids, m
        assert m["current_worker_node_count"] == 3, m
    finally:
        up.close()


def test_tasks_submitted_anywhere_complete_exactly_once(h):
    nodes, up, db = cluster(h)
    try:
        mid = chat_model(nodes[0], up, path="inflight/20")
        deploy(nodes[0], mid)
        before = up.count()
        texts = {}
        lock = threading.Lock()

        def submit(s, k):
            for i in range(40):
                text = "n%d-%d" % (k, i)
                tid = async_predict(s, mid, text)
                with lock:
                    texts[tid] = text

        threads = [threading.Thread(target=submit, args=(s, k)) for k, s in enumerate(nodes)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(texts) == 120
        wait_for("120 final tasks", lambda: count(
            db, "SELECT count(*) FROM tasks WHERE task_type = 'PREDICTION' AND "
                "state IN ('COMPLETED', 'FAILED')") == 120, timeout=30)
        # Each task ran once (the upstream saw each input once) and completed, and the work was
        # shared: more than one node claimed tasks.
        claimed = psql("SELECT claimed_by, count(*) FROM tasks WHERE task_type = 'PREDICTION' "
                       "GROUP BY claimed_by", db)
        rows = [line.split("|") for line in claimed.split("\n") if line]
        assert len(rows) >= 2, rows
        assert sum(int(c) for _, c in rows) == 120, rows
        with up.lock:
            sent = [r for r in up.requests[before:] if r["path"].startswith("/inflight")]
        contents = sorted(json.loads(r["body"])["messages"][0]["content"] for r in sent)
        assert contents == sorted(texts.values()), (len(contents), len(texts))
        for tid in list(texts)[:10]:
            r = nodes[2].get(ML + "/tasks/" + tid)
            assert r.status == 200 and r.json["state"] == "COMPLETED", r
    finally:
        up.close()


def test_kill9_node_mid_task_others_finish_after_its_lease(h):  # slow
    nodes, up, db = cluster(h)
    try:
        mid = chat_model(nodes[0], up, path="slow/1500")
        deploy(nodes[0], mid)
        victim = nodes[1]
        # Only the victim runs for a moment, so it claims every task.
        nodes[0].stop()
        nodes[2].stop()
        tids = [async_predict(victim, mid, "k%d" % i) for i in range(6)]
        wait_for("tasks RUNNING on the victim", lambda: count(
            db, "SELECT count(*) FROM tasks WHERE state = 'RUNNING' AND "
                "task_type = 'PREDICTION'") >= 1)
        victim.kill9()
        t_kill = time.time()
        nodes[0].start()
        nodes[2].start()
        wait_for("the dead node's tasks completed by the others", lambda: count(
            db, "SELECT count(*) FROM tasks WHERE state = 'COMPLETED' AND "
                "task_type = 'PREDICTION'") == 6, timeout=30)
        took = time.time() - t_kill
        # The node lease is 5 s: the others take over after it, not after the task's own
        # lease (its 10-minute timeout).
        assert took < 15, took
        for tid in tids:
            r = nodes[0].get(ML + "/tasks/" + tid)
            assert r.status == 200 and r.json["state"] == "COMPLETED", r
    finally:
        up.close()


def test_deploy_on_one_node_serves_predicts_on_all(h):
    nodes, up, db = cluster(h)
    try:
        mid = chat_model(nodes[0], up)
        deploy(nodes[0], mid)
        # With auto-deploy off a node serves the model only if it followed the deploy.
        put_settings(nodes[0], {"plugins.ml_commons.model_auto_deploy.enable": False})
        for s in nodes:
            wait_for("predict on every node", lambda: predict(s, mid, CHAT).status == 200,
                     timeout=PROPAGATE_S)
        for s in nodes:
            j = predict_ok(s, mid, CHAT)
            assert j["inference_results"][0]["status_code"] == 200, j
        r = nodes[1].post(ML + "/tasks/_search", {"query": {"term": {
            "task_type": "DEPLOY_MODEL"}}})
        assert r.json["hits"]["total"]["value"] == 1, r
        wait_for("three holders", lambda: count(
            db, "SELECT count(*) FROM model_nodes WHERE model_id = '%s'" % mid) == 3)
        # Undeploy through another node answers per node, and every node stops serving it
        # within a second.
        r = nodes[2].post(ML + "/models/%s/_undeploy" % mid)
        assert r.status == 200, r
        assert sorted(r.json) == sorted(stored_node_ids(db)), r.json
        for body in r.json.values():
            assert body == {"stats": {mid: "undeployed"}}, r.json
        for s in nodes:
            wait_for("undeployed everywhere", lambda: predict(s, mid, CHAT).status == 400,
                     timeout=PROPAGATE_S)
    finally:
        up.close()


def test_bulk_undeploy_answers_per_node(h):
    nodes, up, db = cluster(h)
    try:
        mids = [chat_model(nodes[0], up, name="m%d" % i) for i in range(2)]
        for mid in mids:
            deploy(nodes[0], mid)
        wait_for("every node holds both", lambda: count(
            db, "SELECT count(*) FROM model_nodes") == 6)
        r = nodes[1].post(ML + "/models/_undeploy", {"model_ids": mids + ["nope"]})
        assert r.status == 200, r
        ids = stored_node_ids(db)
        assert set(r.json) == set(ids), (r.json, ids)
        for node in ids:
            stats = r.json[node]["stats"]
            assert stats[mids[0]] == "undeployed" and stats[mids[1]] == "undeployed", r.json
        # The unknown id was held by nobody: it is reported once, by the node that answered.
        assert sum("nope" in body["stats"] for body in r.json.values()) == 1, r.json
        wait_for("nobody holds them", lambda: count(
            db, "SELECT count(*) FROM model_nodes") == 0, timeout=2)
    finally:
        up.close()


def test_settings_reach_every_node_within_a_second(h):
    nodes, up, db = cluster(h)
    try:
        key = "plugins.ml_commons.max_model_on_node"
        put_settings(nodes[0], {key: "7"})
        for s in nodes[1:]:
            wait_for("setting on every node", lambda: s.get(SETTINGS + "?flat_settings=true")
                     .json["persistent"].get(key) == "7", timeout=PROPAGATE_S)
        # A setting that changes behaviour: remote inference turned off through node 0 refuses
        # deploys on node 2.
        mid = chat_model(nodes[1], up)
        put_settings(nodes[0], {"plugins.ml_commons.remote_inference.enabled": False})
        wait_for("remote inference off on node 2", lambda: nodes[2].post(
            ML + "/models/%s/_deploy" % mid).status == 400, timeout=PROPAGATE_S)
    finally:
        up.close()


def test_ttl_waits_for_every_node_to_be_idle(h):  # slow
    nodes, up, db = cluster(h)
    try:
        mid = chat_model(nodes[0], up, deploy_setting={"model_ttl_minutes": 0.1})  # 6 s
        deploy(nodes[0], mid)
        for s in nodes:
            wait_for("deployed everywhere", lambda: count(
                db, "SELECT count(*) FROM model_nodes WHERE model_id = '%s'" % mid) == 3,
                timeout=PROPAGATE_S)
        # Only node 2 uses it; nodes 0 and 1 are idle for twice the TTL.
        for _ in range(12):
            time.sleep(1)
            predict_ok(nodes[2], mid, CHAT)
        assert get_model(nodes[0], mid)["model_state"] == "DEPLOYED"
        # Once node 2 stops too, the model expires (TTL plus flush and sweep slack).
        deadline = time.time() + 12
        while get_model(nodes[0], mid)["model_state"] != "UNDEPLOYED":
            assert time.time() < deadline, get_model(nodes[0], mid)
            time.sleep(0.1)
    finally:
        up.close()


def test_restart_of_one_node_loses_nothing(h):
    nodes, up, db = cluster(h)
    try:
        mid = chat_model(nodes[0], up)
        deploy(nodes[0], mid)
        put_settings(nodes[0], {"plugins.ml_commons.model_auto_deploy.enable": False})
        nodes[1].kill9()
        nodes[1].start()
        wait_for("redeployed after restart", lambda: predict(nodes[1], mid, CHAT).status == 200,
                 timeout=3)
        r = nodes[1].get(ML + "/models/" + mid)
        assert r.status == 200 and r.json["model_state"] == "DEPLOYED", r
    finally:
        up.close()
