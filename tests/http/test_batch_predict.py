"""Offline batch predict, black-box (spec README §4, §7, §9; mlcommons-reference.md §6.9, §8.4).

The mock provider of upstream.py plays OpenAI's batch API on 127.0.0.1. Most connectors name
only a batch_predict action whose URL contains "openai" (http://<mock>/openai/v1/batches), so
the status and cancel calls go through mlrelay's synthesised actions. The poll interval is set
to 200ms, so every state change below is the timer's doing: the tests only read the task.
"""

import time

from upstream import Upstream

ML = "/_plugins/_ml"
SETTINGS = "/_cluster/settings"
TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"
PRIVATE_IP = "plugins.ml_commons.connector.private_ip_enabled"
POLL = "mlrelay.batch_predict.poll_interval"
ENABLED = "plugins.ml_commons.offline_batch_inference_enabled"
MAX_TASKS = "plugins.ml_commons.max_batch_inference_tasks"
SECRET = "sk-batch-secret-7f3a"
BATCH_BODY = ("{\"input_file_id\": \"${parameters.input_file_id}\", \"endpoint\": "
              "\"/v1/embeddings\", \"completion_window\": \"24h\", \"mock\": ${parameters.mock}}")
DISABLED = ("Offline Batch Inference is currently disabled. To enable it, update the setting "
            "\"plugins.ml_commons.offline_batch_inference_enabled\" to true.")
LIMIT = ("Exceeded maximum limit for BATCH_PREDICTION tasks. To increase the limit, update the "
         "plugins.ml_commons.max_batch_inference_tasks setting.")


def put_settings(s, persistent):
    r = s.put(SETTINGS, {"persistent": persistent})
    assert r.status == 200, (persistent, r)


def start(h):
    up = Upstream()
    s = h.server()
    put_settings(s, {TRUSTED: ["^http://127\\.0\\.0\\.1:.*$"], PRIVATE_IP: True, POLL: "200ms"})
    return s, up


def model(s, up, actions=None, path="openai/v1/batches"):
    """A connector with a batch_predict action on the mock (and @actions), and a model on it."""
    batch = {"action_type": "batch_predict", "method": "POST",
             "url": "http://${parameters.endpoint}/" + path,
             "headers": {"Authorization": "Bearer ${credential.key}"},
             "request_body": BATCH_BODY}
    c = {"name": "batch connector", "description": "d", "version": 1, "protocol": "http",
         "parameters": {"endpoint": up.endpoint, "input_file_id": "file-in", "mock": "{}"},
         "credential": {"key": SECRET},
         "actions": [batch] + (actions or [])}
    r = s.post(ML + "/connectors/_create", c)
    assert r.status == 200, r
    r = s.post(ML + "/models/_register", {"name": "batch model", "function_name": "remote",
                                          "connector_id": r.json["connector_id"]})
    assert r.status == 200, r
    return r.json["model_id"]


def batch(s, mid, mock=None, **extra):
    body = {"parameters": {"mock": mock or {}}}
    body.update(extra)
    return s.post(ML + "/models/%s/_batch_predict" % mid, body)


def create(s, mid, mock=None):
    r = batch(s, mid, mock)
    assert r.status == 200, r
    return r.json["task_id"]


def wait_state(s, tid, state, timeout=8.0):
    deadline = time.time() + timeout
    doc = None
    while time.time() < deadline:
        r = s.get(ML + "/tasks/" + tid)
        assert r.status == 200, r
        doc = r.json
        if doc["state"] == state:
            return doc
        time.sleep(0.05)
    raise AssertionError("task %s never reached %s: %r" % (tid, state, doc))


def expect_error(r, status, reason, etype=None):
    assert r.status == status, r
    t, why = r.error()
    assert why == reason, r
    if etype:
        assert t == etype, r


# -- tests --------------------------------------------------------------------------------------

def test_create_answer_and_task_document(h):
    s, up = start(h)
    try:
        mid = model(s, up)
        r = batch(s, mid, {"steps": 50}, dlq={"bucket": "b", "region": "us-east-1"})
        assert r.status == 200, r
        assert set(r.json) == {"task_id", "status", "remote_job"}, r
        assert r.json["status"] == "CREATED"
        rj = r.json["remote_job"]
        assert rj["id"] == "batch_1" and rj["object"] == "batch" and rj["status"] == "validating"
        assert rj["dlq"] == {"bucket": "b", "region": "us-east-1"}, rj
        sent = up.requests[0]
        assert sent["method"] == "POST" and sent["path"] == "/openai/v1/batches", sent
        assert sent["headers"]["authorization"] == "Bearer " + SECRET
        doc = s.get(ML + "/tasks/" + r.json["task_id"]).json
        assert doc["task_type"] == "BATCH_PREDICTION" and doc["function_name"] == "REMOTE", doc
        assert doc["state"] == "CREATED" and doc["is_async"] is False, doc
        assert doc["model_id"] == mid and doc["remote_job"]["id"] == "batch_1", doc
        assert "input" not in doc and "parameters" not in doc, doc
    finally:
        up.close()


def test_timer_walks_the_job_to_completed(h):
    s, up = start(h)
    try:
        mid = model(s, up)
        tid = create(s, mid, {"steps": 2})
        doc = wait_state(s, tid, "COMPLETED")
        assert doc["remote_job"]["status"] == "completed", doc
        assert doc["remote_job"]["output_file_id"] == "file-out-batch_1", doc
        gets = [q for q in up.requests if q["method"] == "GET"]
        assert gets and gets[0]["path"] == "/openai/v1/batches/batch_1", gets
        assert gets[0]["headers"]["authorization"] == "Bearer " + SECRET
        n = up.count()
        time.sleep(0.6)  # a final task is no longer polled, and GET never calls the provider
        for _ in range(3):
            assert s.get(ML + "/tasks/" + tid).status == 200
        assert up.count() == n
    finally:
        up.close()


def test_failed_job_becomes_failed(h):
    s, up = start(h)
    try:
        tid = create(s, model(s, up), {"steps": 0, "outcome": "failed"})
        assert wait_state(s, tid, "FAILED")["remote_job"]["status"] == "failed"
    finally:
        up.close()


def test_cancel_then_cancelled(h):
    s, up = start(h)
    try:
        tid = create(s, model(s, up), {"steps": 1000})
        r = s.post(ML + "/tasks/%s/_cancel" % tid)
        assert r.status == 200 and r.json == {"status": "OK"}, r
        assert any(q["method"] == "POST" and q["path"] == "/openai/v1/batches/batch_1/cancel"
                   for q in up.requests), up.requests
        wait_state(s, tid, "CANCELLED")
    finally:
        up.close()


def test_cancel_refused_by_provider(h):
    s, up = start(h)
    try:
        tid = create(s, model(s, up), {"steps": 1000, "cancel_error": 409})
        expect_error(s.post(ML + "/tasks/%s/_cancel" % tid), 500,
                     "Couldn't cancel the transform job. Please try again")
    finally:
        up.close()


def test_configured_status_and_cancel_actions(h):
    s, up = start(h)
    try:
        # Literal host: the job's own "endpoint" field (a string of remote_job) overrides the
        # connector parameter of that name in status and cancel calls, as in ML Commons.
        url = "http://%s/v1/batches/${parameters.id}" % up.endpoint
        mid = model(s, up, path="v1/batches", actions=[
            {"action_type": "batch_predict_status", "method": "GET", "url": url},
            {"action_type": "cancel_batch_predict", "method": "POST", "url": url + "/cancel",
             "request_body": "{}"}])
        tid = create(s, mid, {"steps": 1})
        wait_state(s, tid, "COMPLETED")
        tid = create(s, mid, {"steps": 1000})
        assert s.post(ML + "/tasks/%s/_cancel" % tid).status == 200
        wait_state(s, tid, "CANCELLED")
    finally:
        up.close()


def test_unreachable_after_repeated_failures(h):
    s, up = start(h)
    try:
        tid = create(s, model(s, up), {"status_error": 503})
        doc = wait_state(s, tid, "UNREACHABLE", timeout=10)
        assert doc["remote_job"]["num_of_retries"] == 11, doc
        assert "503" in doc["error"] or "unavailable" in doc["error"], doc
    finally:
        up.close()


def test_unknown_provider_cannot_be_polled(h):
    s, up = start(h)
    try:
        tid = create(s, model(s, up, path="v1/batches"), {"steps": 0})
        doc = wait_state(s, tid, "UNREACHABLE", timeout=10)
        assert doc["error"] == ("Please configure the action type to get the batch job details "
                                "in the connector"), doc
        expect_error(s.post(ML + "/tasks/%s/_cancel" % tid), 400,
                     "Please configure the action type to cancel the batch job in the connector")
    finally:
        up.close()


def test_refusals(h):
    s, up = start(h)
    try:
        mid = model(s, up)
        expect_error(batch(s, "nope"), 404, "Failed to find model")
        r = batch(s, mid, dlq={"bucket": "b"})
        assert r.status == 400, r
        expect_error(batch(s, mid, {"create_error": 400}), 404,
                     "Unable to create batch transform job")
        # The log line is read by a pump thread: give it a moment on a slow (sanitizer) build.
        deadline = time.time() + 5
        while "upstream_status=400" not in s.log() and time.time() < deadline:
            time.sleep(0.02)
        assert "upstream_status=400" in s.log(), s.log()
        r = s.post(ML + "/connectors/_create", {
            "name": "c", "version": 1, "protocol": "http", "parameters": {},
            "credential": {"k": "v"},
            "actions": [{"action_type": "predict", "method": "POST",
                         "url": "http://%s/echo" % up.endpoint, "request_body": "{}"}]})
        r = s.post(ML + "/models/_register", {"name": "m", "function_name": "remote",
                                              "connector_id": r.json["connector_id"]})
        expect_error(batch(s, r.json["model_id"]), 400, "no BATCH_PREDICT action found")
        put_settings(s, {ENABLED: False})
        expect_error(batch(s, mid), 400, DISABLED, "illegal_state_exception")
    finally:
        up.close()


def test_limit_on_open_batch_tasks(h):
    s, up = start(h)
    try:
        put_settings(s, {MAX_TASKS: 1})
        mid = model(s, up)
        tid = create(s, mid, {"steps": 1000})
        expect_error(batch(s, mid), 429, LIMIT)
        assert s.post(ML + "/tasks/%s/_cancel" % tid).status == 200
        wait_state(s, tid, "CANCELLED")
        create(s, mid)  # a final task no longer counts
    finally:
        up.close()


def test_polling_resumes_after_kill9(h):
    s, up = start(h)
    try:
        tid = create(s, model(s, up), {"steps": 6})
        s.kill9()
        s.start()
        doc = wait_state(s, tid, "COMPLETED")
        assert doc["remote_job"]["status"] == "completed", doc
    finally:
        up.close()


def test_credential_never_shown(h):
    s, up = start(h)
    try:
        mid = model(s, up)
        r = batch(s, mid, {"steps": 0})
        tid = r.json["task_id"]
        wait_state(s, tid, "COMPLETED")
        seen = [r.body, s.get(ML + "/tasks/" + tid).body,
                s.post(ML + "/tasks/_search", {"query": {"match_all": {}}}).body,
                s.post(ML + "/tasks/%s/_cancel" % tid).body]
        assert all(SECRET.encode() not in b for b in seen), seen
        assert SECRET not in s.log()
    finally:
        up.close()
