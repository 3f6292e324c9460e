"""Model TTL: idle deployments are undeployed by a timer (spec README §5; reference §10; issue 6
point 1). Fractional minutes make the TTLs a few seconds long; no case waits more than ~10 s.
"""

import os
import time

from harness import sqlite_only
from test_predict import ML, get_model, model_for, predict_ok, put_settings, relay

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def ttl_model(s, up, minutes, wait=True):
    """A registered and deployed model with deploy_setting.model_ttl_minutes = @minutes."""
    mid = model_for(s, up, "v1/chat/completions",
                    model_extra={"deploy_setting": {"model_ttl_minutes": minutes}})
    r = s.post(ML + "/models/%s/_deploy" % mid)
    assert r.status == 200, r
    deadline = time.time() + 5
    if not wait:
        return mid
    while get_model(s, mid)["model_state"] != "DEPLOYED":
        assert time.time() < deadline, get_model(s, mid)
        time.sleep(0.02)
    return mid


def wait_state(s, mid, state, timeout):
    """Polls model @mid until it is in @state; returns the wall-clock time it was first seen."""
    deadline = time.time() + timeout
    while True:
        m = get_model(s, mid)
        if m["model_state"] == state:
            return time.time(), m
        assert time.time() < deadline, (state, m)
        time.sleep(0.05)


def undeploy_tasks(s, mid):
    r = s.post(ML + "/tasks/_search", {"query": {"bool": {"filter": [
        {"term": {"model_id": mid}}, {"term": {"task_type": "UNDEPLOY_MODEL"}}]}}})
    assert r.status == 200, r
    return [hit["_source"] for hit in r.json["hits"]["hits"]]


def test_ttl_counts_idle_time_since_last_predict(h):
    with relay(h) as (s, up):
        mid = ttl_model(s, up, 0.05)  # 3 s
        deployed = get_model(s, mid)["last_deployed_time"] / 1000.0
        # Predicts every second keep it alive past its first deadline.
        for _ in range(4):
            time.sleep(1)
            predict_ok(s, mid, CHAT)
        last_use = time.time()
        assert last_use > deployed + 3.5
        assert get_model(s, mid)["model_state"] == "DEPLOYED"
        seen, m = wait_state(s, mid, "UNDEPLOYED", 6)
        # Undeployed within 1 s of last use + TTL (the model records when it happened).
        lateness = m["last_undeployed_time"] / 1000.0 - (last_use + 3)
        assert -0.3 < lateness < 1.0, lateness
        tasks = undeploy_tasks(s, mid)
        assert len(tasks) == 1 and tasks[0]["state"] == "COMPLETED", tasks
        assert tasks[0]["is_async"] is True and tasks[0]["function_name"] == "REMOTE"


def test_ttl_expired_model_autodeploys_on_next_predict(h):
    with relay(h) as (s, up):
        mid = ttl_model(s, up, 0.02)  # 1.2 s
        wait_state(s, mid, "UNDEPLOYED", 4)
        j = predict_ok(s, mid, CHAT)
        assert j["inference_results"][0]["status_code"] == 200
        assert get_model(s, mid)["model_state"] == "DEPLOYED"
        # ... and the fresh deployment expires again on its own.
        wait_state(s, mid, "UNDEPLOYED", 4)
        assert len(undeploy_tasks(s, mid)) == 2


def test_ttl_zero_and_negative(h):
    with relay(h) as (s, up):
        never = ttl_model(s, up, -1)
        zero = ttl_model(s, up, 0, wait=False)  # may be gone before a GET could see it
        wait_state(s, zero, "UNDEPLOYED", 4)
        assert len(undeploy_tasks(s, zero)) == 1
        time.sleep(1)
        assert get_model(s, never)["model_state"] == "DEPLOYED"
        assert undeploy_tasks(s, never) == []


def test_ttl_survives_restart(h):
    """The deadline after a restart is computed from the stored last-use time, not from the
    restart: kill -9 two seconds after the last predict of a 6 s TTL, restart at once, and the
    model must go about 4 s later, not 6."""
    with relay(h) as (s, up):
        mid = ttl_model(s, up, 0.1)  # 6 s
        predict_ok(s, mid, CHAT)
        last_use = time.time()
        time.sleep(2)  # > 1 s: the last-use time has been flushed
        s.kill9()
        s.start()
        assert get_model(s, mid)["model_state"] == "DEPLOYED"  # redeployed at start
        seen, m = wait_state(s, mid, "UNDEPLOYED", 8)
        lateness = m["last_undeployed_time"] / 1000.0 - (last_use + 6)
        assert -1.5 < lateness < 1.0, lateness
        assert "redeployed 1 of 1 models" in s.log()


def test_ttl_deadline_passed_while_down(h):
    with relay(h) as (s, up):
        mid = ttl_model(s, up, 0.03)  # 1.8 s
        time.sleep(1.2)
        s.stop()
        time.sleep(1.5)
        started = time.time()
        s.start()
        seen, m = wait_state(s, mid, "UNDEPLOYED", 3)
        assert m["last_undeployed_time"] / 1000.0 - started < 1.5, m


def test_ttl_expiry_survives_a_full_disk(h):
    """The undeploy task of an expired model cannot be written while the disk is full: the
    expiry is tried again and happens once the disk has room."""
    sqlite_only("the disk faults are injected through SQLite's VFS (MLRELAY_FAULT_FILE)")
    fault = os.path.join(h.tmp, "fault")
    with relay(h) as (s, up):
        s.stop()
        s.env = {"MLRELAY_FAULT_FILE": fault}
        s.start()
        if "fault injection armed" not in s.log():
            print("skipped: this build has no fault seam (-DMLR_FAULT_INJECTION=OFF)")
            return
        put_settings(s, {"plugins.ml_commons.trusted_connector_endpoints_regex":
                         ["^http://127\\.0\\.0\\.1:.*$"],
                         "plugins.ml_commons.connector.private_ip_enabled": True})
        mid = ttl_model(s, up, 0.02)  # 1.2 s
        with open(fault, "w") as f:
            f.write("full")
        time.sleep(2.5)  # past the deadline: the task write failed
        assert "cannot record the TTL undeploy task" in s.log()
        os.unlink(fault)
        wait_state(s, mid, "UNDEPLOYED", 4)
