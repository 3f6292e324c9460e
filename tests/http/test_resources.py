"""Model groups, connectors, remote models and tasks: create/get/update/delete, _search,
credential secrecy and persistence (spec README §3, §4, §8, §9; mlcommons-reference.md §1, §3, §4,
§6.1-6.5, §8, §13; clients.md §4 items 4-19, 21, 25-27).

mlrelay keeps ML Commons' reason texts but uses correct statuses (README §9): not found -> 404,
validation -> 400, conflicts -> 409.
"""

import base64
import copy
import json
import os
import re
import stat
import threading
import time

from harness import pg_only, psql

ML = "/_plugins/_ml"
SETTINGS = "/_cluster/settings"
TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"
REMOTE_ON = "plugins.ml_commons.remote_inference.enabled"

IDX = {"model_groups": ".plugins-ml-model-group", "connectors": ".plugins-ml-connector",
       "models": ".plugins-ml-model", "tasks": ".plugins-ml-task"}
KINDS = ("model_groups", "connectors", "models", "tasks")
AUTO_ID = re.compile(r"^[A-Za-z0-9_-]{20}$")

MODEL_AC = ("You cannot specify model access control parameters because the Security plugin or "
            "model access control is disabled on your cluster.")
CONNECTOR_AC = ("You cannot specify connector access control parameters because the Security "
                "plugin or connector access control is disabled on your cluster.")
NOT_TRUSTED = "Connector URL is not matching the trusted connector endpoint regex"
NO_TRUSTED = ("Trusted connector endpoints regex is not configured. Please set "
              "plugins.ml_commons.trusted_connector_endpoints_regex.")
REMOTE_DISABLED = ("Remote Inference is currently disabled. To enable it, update the setting "
                   "\"plugins.ml_commons.remote_inference_enabled\" to true.")

CLIENT_CONFIG_DEFAULTS = {"max_connection": 30, "connection_timeout": 30, "read_timeout": 30,
                          "retry_backoff_millis": 200, "retry_timeout_seconds": 30,
                          "max_retry_times": 0, "retry_backoff_policy": "constant",
                          "skip_ssl_verification": False, "mutual_tls_enabled": False}

# Fields a connector GET may show (mlcommons-reference.md §4.4 order); never `credential`.
CONNECTOR_FIELDS = {"name", "version", "description", "protocol", "parameters", "actions",
                    "backend_roles", "owner", "access", "created_time", "last_updated_time",
                    "client_config", "tenant_id", "provisioned_by"}
# Fields a model GET may show (mlcommons-reference.md §6.2).
MODEL_FIELDS = {"name", "model_group_id", "algorithm", "model_version", "description",
                "model_state", "model_config", "deploy_setting", "is_enabled",
                "is_controller_enabled", "rate_limiter", "created_time", "last_updated_time",
                "last_registered_time", "last_deployed_time", "last_undeployed_time",
                "auto_redeploy_retry_times", "planning_worker_node_count",
                "current_worker_node_count", "planning_worker_nodes", "deploy_to_all_nodes",
                "is_hidden", "connector", "connector_id", "guardrails", "interface", "tenant_id",
                "provisioned_by"}


# -- request bodies ---------------------------------------------------------------------------

def completions_connector(key="sk-test-key"):
    """clients.md §4: the "OpenAI completions connector" of ML Commons' ITs."""
    return {
        "name": "OpenAI Connector",
        "description": "The connector to public OpenAI model service for GPT 3.5",
        "version": 1,
        "client_config": {"max_connection": 20, "connection_timeout": 50, "read_timeout": 50},
        "protocol": "http",
        "parameters": {"endpoint": "api.openai.com", "auth": "API_Key",
                       "content_type": "application/json", "max_tokens": 7, "temperature": 0,
                       "model": "gpt-3.5-turbo-instruct"},
        "credential": {"openAI_key": key},
        "actions": [{
            "action_type": "predict",
            "method": "POST",
            "url": "https://${parameters.endpoint}/v1/completions",
            "headers": {"Authorization": "Bearer ${credential.openAI_key}"},
            "request_body": "{ \"model\": \"${parameters.model}\", \"prompt\": "
                            "\"${parameters.prompt}\",  \"max_tokens\": ${parameters.max_tokens},"
                            "  \"temperature\": ${parameters.temperature} }",
        }],
    }


def chat_connector(key="sk-chat-key"):
    """mlcommons-reference.md §4.1 example."""
    return {
        "name": "OpenAI Chat Connector",
        "description": "The connector to public OpenAI model service for GPT 3.5",
        "version": 1,
        "protocol": "http",
        "parameters": {"endpoint": "api.openai.com", "model": "gpt-3.5-turbo"},
        "credential": {"openAI_key": key},
        "actions": [{
            "action_type": "predict",
            "method": "POST",
            "url": "https://${parameters.endpoint}/v1/chat/completions",
            "headers": {"Authorization": "Bearer ${credential.openAI_key}"},
            "request_body": "{ \"model\": \"${parameters.model}\", \"messages\": "
                            "${parameters.messages} }",
        }],
        "client_config": {"max_connection": 20, "read_timeout": 60, "max_retry_times": 3,
                          "retry_backoff_policy": "exponential_full_jitter"},
    }


def sigv4_connector():
    return {
        "name": "Bedrock Connector",
        "version": "1",
        "protocol": "aws_sigv4",
        "parameters": {"region": "us-east-1", "service_name": "bedrock"},
        "credential": {"access_key": "AKIAEXAMPLE", "secret_key": "secret-example"},
        "actions": [{
            "action_type": "predict",
            "method": "POST",
            "url": "https://bedrock-runtime.${parameters.region}.amazonaws.com/model/x/invoke",
            "headers": {"content-type": "application/json"},
            "request_body": "{ \"inputText\": \"${parameters.inputText}\" }",
        }],
    }


def local_connector(name="Local Connector", key="local-key", url="http://127.0.0.1:9/v1/x"):
    return {
        "name": name,
        "version": "1",
        "protocol": "http",
        "parameters": {"model": "m"},
        "credential": {"key": key},
        "actions": [{"action_type": "predict", "method": "POST", "url": url,
                     "headers": {"Authorization": "Bearer ${credential.key}"},
                     "request_body": "{ \"input\": \"${parameters.input}\" }"}],
    }


# -- helpers ----------------------------------------------------------------------------------

def now_ms():
    return int(time.time() * 1000)


def expect_error(r, status, reason=None, etype=None, contains=None):
    """Asserts an OpenSearch error envelope with @status (and @reason / @etype / @contains)."""
    assert r.status == status, (status, reason, r)
    t, why = r.error()
    if reason is not None:
        assert why == reason, (reason, r)
    if etype is not None:
        assert t == etype, (etype, r)
    if contains is not None:
        assert contains.lower() in why.lower(), (contains, r)
    return t, why


def expect_write(r, kind, doc_id, result, status=200):
    """Asserts an OpenSearch write response (_index, _id, _version, result, _shards, ...)."""
    assert r.status == status, (status, result, r)
    j = r.json
    assert isinstance(j, dict), r
    assert j.get("_index") == IDX[kind], r
    assert j.get("_id") == doc_id, r
    assert j.get("result") == result, r
    assert isinstance(j.get("_version"), int) and not isinstance(j["_version"], bool), r
    sh = j.get("_shards")
    assert isinstance(sh, dict) and set(sh) >= {"total", "successful", "failed"}, r
    assert all(isinstance(sh[k], int) for k in ("total", "successful", "failed")), r
    assert sh["failed"] == 0, r
    assert isinstance(j.get("_seq_no"), int), r
    assert isinstance(j.get("_primary_term"), int), r
    return j


def check_time(v, t0):
    assert isinstance(v, int) and not isinstance(v, bool), v
    assert t0 - 5000 <= v <= now_ms() + 5000, (v, t0)


def put_settings(s, persistent):
    r = s.put(SETTINGS, {"persistent": persistent})
    assert r.status == 200, (persistent, r)


def trust_local(s):
    put_settings(s, {TRUSTED: ["^http://127\\.0\\.0\\.1:.*$"]})


def register_group(s, name, **extra):
    body = {"name": name}
    body.update(extra)
    r = s.post(ML + "/model_groups/_register", body)
    assert r.status == 200, (body, r)
    assert r.json["status"] == "CREATED", r
    return r.json["model_group_id"]


def create_connector(s, body):
    r = s.post(ML + "/connectors/_create", body)
    assert r.status == 200, (body, r)
    assert set(r.json) == {"connector_id"}, r
    return r.json["connector_id"]


def register_model(s, body):
    """Registers and waits for the REGISTER_MODEL task, as ML Commons clients do (waitForTask)."""
    r = s.post(ML + "/models/_register", body)
    assert r.status == 200, (body, r)
    wait_task(s, r.json["task_id"])
    return r.json


def wait_task(s, task_id, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        r = s.get("%s/tasks/%s" % (ML, task_id))
        assert r.status == 200, r
        if r.json["state"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return r.json
        assert time.time() < deadline, r.json
        time.sleep(0.01)


def remote_model(name, connector_id=None, group=None, **extra):
    body = {"name": name, "function_name": "remote", "description": "test model"}
    if connector_id is not None:
        body["connector_id"] = connector_id
    if group is not None:
        body["model_group_id"] = group
    body.update(extra)
    return body


def get_doc(s, kind, doc_id):
    r = s.get("%s/%s/%s" % (ML, kind, doc_id))
    assert r.status == 200, (kind, doc_id, r)
    return r.json


def search(s, kind, body=None, method="POST"):
    r = s.request(method, "%s/%s/_search" % (ML, kind), body=body)
    assert r.status == 200, (kind, body, r)
    j = r.json
    assert j["timed_out"] is False, j
    assert isinstance(j["took"], int), j
    assert isinstance(j["_shards"], dict), j
    assert j["hits"]["total"]["relation"] == "eq", j
    assert "max_score" in j["hits"], j
    for hit in j["hits"]["hits"]:
        assert hit["_index"] == IDX[kind], hit
        for k in ("_version", "_seq_no", "_primary_term"):
            assert isinstance(hit[k], int), hit
        assert isinstance(hit["_score"], (int, float)), hit
    return j


def total(s, kind, body=None, method="POST"):
    return search(s, kind, body, method)["hits"]["total"]["value"]


def ids_of(j):
    return [hit["_id"] for hit in j["hits"]["hits"]]


def id_set(s, kind, query, **extra):
    body = {"query": query, "size": 100}
    body.update(extra)
    j = search(s, kind, body)
    got = ids_of(j)
    assert j["hits"]["total"]["value"] == len(got), j
    return set(got)


def count_all(s):
    return {k: total(s, k, {"query": {"match_all": {}}, "size": 1000}) for k in KINDS}


def snapshot(s, refs):
    """GET body of every (kind, id) in @refs."""
    return {(k, i): get_doc(s, k, i) for k, i in refs}


# -- model groups -----------------------------------------------------------------------------

def test_group_register_and_get(h):
    s = h.server()
    t0 = now_ms()
    r = s.post(ML + "/model_groups/_register",
               {"name": "remote_model_group", "description": "This is an example description"})
    assert r.status == 200, r
    assert set(r.json) == {"model_group_id", "status"}, r
    assert r.json["status"] == "CREATED", r
    gid = r.json["model_group_id"]
    assert AUTO_ID.match(gid), gid
    doc = get_doc(s, "model_groups", gid)
    assert set(doc) == {"name", "latest_version", "description", "access", "created_time",
                        "last_updated_time"}, doc
    assert doc["name"] == "remote_model_group", doc
    assert doc["latest_version"] == 0, doc
    assert doc["description"] == "This is an example description", doc
    assert doc["access"] == "public", doc
    check_time(doc["created_time"], t0)
    check_time(doc["last_updated_time"], t0)
    # A second group gets a different id.
    gid2 = register_group(s, "another group")
    assert gid2 != gid and AUTO_ID.match(gid2), gid2


def test_group_register_bad_bodies(h):
    s = h.server()
    r = s.post(ML + "/model_groups/_register", raw=b"",
               headers={"Content-Type": "application/json"})
    expect_error(r, 400, "Model group request has empty body", "parse_exception")
    r = s.post(ML + "/model_groups/_register", raw=b"")
    expect_error(r, 400, "Model group request has empty body", "parse_exception")
    for body in ({}, {"description": "no name"}, {"name": None}):
        r = s.post(ML + "/model_groups/_register", body)
        expect_error(r, 400, "model group name must not be null")
    r = s.post(ML + "/model_groups/_register", "{\"name\": ")
    assert r.status == 400, r
    r.error()
    assert total(s, "model_groups") == 0


def test_group_duplicate_name(h):
    s = h.server()
    gid = register_group(s, "remote_model_group")
    r = s.post(ML + "/model_groups/_register", {"name": "remote_model_group", "description": "x"})
    expect_error(r, 400, "The name you provided is already being used by a model group with "
                         "ID: %s." % gid, "illegal_argument_exception")
    assert total(s, "model_groups") == 1


def test_group_access_fields_refused(h):
    s = h.server()
    for extra in ({"access_mode": "public"}, {"access_mode": "restricted"},
                  {"backend_roles": ["IT"]}, {"add_all_backend_roles": True},
                  {"access_mode": "private", "backend_roles": ["IT"]}):
        body = {"name": "g", "description": "d"}
        body.update(extra)
        r = s.post(ML + "/model_groups/_register", body)
        expect_error(r, 400, MODEL_AC)
    assert total(s, "model_groups") == 0
    # ... and on update (clients.md item 18).
    gid = register_group(s, "g")
    before = get_doc(s, "model_groups", gid)
    for extra in ({"access_mode": "public"}, {"backend_roles": ["IT"]},
                  {"add_all_backend_roles": True}):
        r = s.put(ML + "/model_groups/" + gid, extra)
        expect_error(r, 400, MODEL_AC)
    assert get_doc(s, "model_groups", gid) == before


def test_group_custom_id(h):
    s = h.server()
    r = s.post(ML + "/model_groups/_register", {"name": "custom", "model_group_id": "my-group_1"})
    assert r.status == 200, r
    assert r.json == {"model_group_id": "my-group_1", "status": "CREATED"}, r
    assert get_doc(s, "model_groups", "my-group_1")["name"] == "custom"
    long_ok = "a" * 512
    r = s.post(ML + "/model_groups/_register", {"name": "long", "model_group_id": long_ok})
    assert r.status == 200 and r.json["model_group_id"] == long_ok, r
    assert get_doc(s, "model_groups", long_ok)["name"] == "long"
    for bad in ("-x", "_x", "a/b", "a b", "a.b", "../etc", "x" * 600, "", "é"):
        r = s.post(ML + "/model_groups/_register", {"name": "bad " + bad[:10],
                                                      "model_group_id": bad})
        expect_error(r, 400)
    r = s.post(ML + "/model_groups/_register", {"name": "other", "model_group_id": "my-group_1"})
    expect_error(r, 409, "model group id 'my-group_1' already exists")
    assert total(s, "model_groups") == 2
    assert get_doc(s, "model_groups", "my-group_1")["name"] == "custom"


def test_group_get_unknown(h):
    s = h.server()
    r = s.get(ML + "/model_groups/111222333")
    expect_error(r, 404, "Failed to find model group index", "status_exception")
    register_group(s, "exists")
    r = s.get(ML + "/model_groups/111222333")
    expect_error(r, 404, "Failed to find model group with the provided model group id: 111222333",
                 "status_exception")


def test_group_update(h):
    s = h.server()
    t0 = now_ms()
    gid = register_group(s, "first", description="one")
    other = register_group(s, "second", description="two")
    created = get_doc(s, "model_groups", gid)
    time.sleep(0.01)
    r = s.put(ML + "/model_groups/" + gid, {"name": "renamed", "description": "new description"})
    assert r.status == 200, r
    assert r.json == {"status": "Updated"}, r
    doc = get_doc(s, "model_groups", gid)
    assert doc["name"] == "renamed" and doc["description"] == "new description", doc
    assert doc["created_time"] == created["created_time"], doc
    assert doc["latest_version"] == 0 and doc["access"] == "public", doc
    check_time(doc["last_updated_time"], t0)
    assert doc["last_updated_time"] >= created["last_updated_time"], doc
    # Only the description.
    r = s.put(ML + "/model_groups/" + gid, {"description": "only description"})
    assert r.status == 200 and r.json == {"status": "Updated"}, r
    doc = get_doc(s, "model_groups", gid)
    assert doc["name"] == "renamed" and doc["description"] == "only description", doc
    # Blank strings are ignored.
    r = s.put(ML + "/model_groups/" + gid, {"name": "", "description": ""})
    assert r.status == 200 and r.json == {"status": "Updated"}, r
    doc = get_doc(s, "model_groups", gid)
    assert doc["name"] == "renamed" and doc["description"] == "only description", doc
    # Renaming to a taken name.
    r = s.put(ML + "/model_groups/" + gid, {"name": "second"})
    expect_error(r, 400, "The name you provided is already being used by another model with ID: "
                         "%s. Please provide a different name" % other)
    assert get_doc(s, "model_groups", gid)["name"] == "renamed"
    # The old name is free again.
    register_group(s, "first")
    # Unknown id.
    r = s.put(ML + "/model_groups/nope123", {"name": "x"})
    expect_error(r, 404, "Failed to find model group with the provided model group id: nope123")
    # Empty body.
    r = s.put(ML + "/model_groups/" + gid, raw=b"")
    expect_error(r, 400, etype="parse_exception")


def test_group_delete(h):
    s = h.server()
    gid = register_group(s, "remote_model_group", description="d")
    keep = register_group(s, "keep")
    r = s.delete(ML + "/model_groups/" + gid)
    j = expect_write(r, "model_groups", gid, "deleted")
    assert j["_version"] >= 1, j
    r = s.get(ML + "/model_groups/" + gid)
    expect_error(r, 404, "Failed to find model group with the provided model group id: " + gid)
    # Deleting again / an unknown id: 404 with the write-response body.
    for missing in (gid, "111222333"):
        r = s.delete(ML + "/model_groups/" + missing)
        expect_write(r, "model_groups", missing, "not_found", status=404)
    assert total(s, "model_groups") == 1
    assert get_doc(s, "model_groups", keep)["name"] == "keep"
    # The name can be registered again (clients.md item 15).
    r = s.post(ML + "/model_groups/_register", {"name": "remote_model_group"})
    assert r.status == 200 and r.json["status"] == "CREATED", r
    assert r.json["model_group_id"] != gid, r


def test_group_delete_with_models(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    gid = register_group(s, "remote_model_group", description="This is an example description")
    reg = register_model(s, remote_model("m", cid, gid, version="1.0.0",
                                         interface={"input": {}, "output": {}}))
    r = s.delete(ML + "/model_groups/" + gid)
    expect_error(r, 409, "Cannot delete the model group when it has associated model versions",
                 "status_exception")
    assert get_doc(s, "model_groups", gid)["latest_version"] == 1
    r = s.delete(ML + "/models/" + reg["model_id"])
    expect_write(r, "models", reg["model_id"], "deleted")
    # Deleting the last model does not delete the group.
    assert get_doc(s, "model_groups", gid)["name"] == "remote_model_group"
    r = s.delete(ML + "/model_groups/" + gid)
    expect_write(r, "model_groups", gid, "deleted")


# -- connectors -------------------------------------------------------------------------------

def test_connector_create_and_get(h):
    s = h.server()
    t0 = now_ms()
    cid = create_connector(s, completions_connector())
    assert AUTO_ID.match(cid), cid
    doc = get_doc(s, "connectors", cid)
    assert "credential" not in doc, doc
    assert set(doc) <= CONNECTOR_FIELDS, doc
    assert doc["name"] == "OpenAI Connector", doc
    assert doc["version"] == "1", doc
    assert doc["description"] == "The connector to public OpenAI model service for GPT 3.5", doc
    assert doc["protocol"] == "http", doc
    assert doc["parameters"] == {"endpoint": "api.openai.com", "auth": "API_Key",
                                 "content_type": "application/json", "max_tokens": "7",
                                 "temperature": "0", "model": "gpt-3.5-turbo-instruct"}, doc
    src = completions_connector()["actions"][0]
    assert doc["actions"] == [{"action_type": "PREDICT", "method": "POST", "url": src["url"],
                               "headers": src["headers"],
                               "request_body": src["request_body"]}], doc
    cc = dict(CLIENT_CONFIG_DEFAULTS, max_connection=20, connection_timeout=50, read_timeout=50)
    assert doc["client_config"] == cc, doc
    check_time(doc["created_time"], t0)
    check_time(doc["last_updated_time"], t0)
    # The chat example: client_config given values kept, the rest defaulted, policy lower-case.
    cid2 = create_connector(s, chat_connector())
    assert cid2 != cid
    doc2 = get_doc(s, "connectors", cid2)
    assert "credential" not in doc2, doc2
    assert doc2["client_config"] == dict(CLIENT_CONFIG_DEFAULTS, max_connection=20,
                                         read_timeout=60, max_retry_times=3,
                                         retry_backoff_policy="exponential_full_jitter"), doc2
    assert doc2["actions"][0]["action_type"] == "PREDICT", doc2
    assert doc2["actions"][0]["headers"] == {"Authorization": "Bearer ${credential.openAI_key}"}
    # A sigv4 connector is fine too.
    cid3 = create_connector(s, sigv4_connector())
    doc3 = get_doc(s, "connectors", cid3)
    assert doc3["protocol"] == "aws_sigv4" and "credential" not in doc3, doc3
    assert total(s, "connectors") == 3


def test_connector_field_conversions(h):
    s = h.server()
    body = completions_connector()
    body["version"] = "2.0"
    body["parameters"] = {"endpoint": "api.openai.com", "int": 7, "small": 0.0001, "flag": True,
                          "list": ["a", 1, True], "obj": {"k": [1, 2]}, "str": "text", "zero": 0}
    body["actions"][0]["action_type"] = "Predict"
    body["client_config"] = {"retry_backoff_policy": "EXPONENTIAL_EQUAL_JITTER",
                             "max_retry_times": -1, "skip_ssl_verification": True}
    cid = create_connector(s, body)
    doc = get_doc(s, "connectors", cid)
    assert doc["version"] == "2.0", doc
    assert doc["parameters"] == {"endpoint": "api.openai.com", "int": "7", "small": "1.0E-4",
                                 "flag": "true",
                                 "list": "[\"a\",1,true]", "obj": "{\"k\":[1,2]}",
                                 "str": "text", "zero": "0"}, doc
    assert doc["actions"][0]["action_type"] == "PREDICT", doc
    assert doc["client_config"] == dict(CLIENT_CONFIG_DEFAULTS,
                                        retry_backoff_policy="exponential_equal_jitter",
                                        max_retry_times=-1, skip_ssl_verification=True), doc
    # Without client_config there is none.
    body = completions_connector()
    del body["client_config"]
    doc = get_doc(s, "connectors", create_connector(s, body))
    assert "client_config" not in doc or doc["client_config"] == CLIENT_CONFIG_DEFAULTS, doc
    # Other action types are upper-cased too.
    body = completions_connector()
    body["actions"].append({"action_type": "batch_predict", "method": "POST",
                            "url": "https://api.openai.com/v1/batches",
                            "headers": {"Authorization": "Bearer ${credential.openAI_key}"},
                            "request_body": "{}"})
    doc = get_doc(s, "connectors", create_connector(s, body))
    assert [a["action_type"] for a in doc["actions"]] == ["PREDICT", "BATCH_PREDICT"], doc


def _mutated(fn, base=None):
    body = copy.deepcopy(base or completions_connector())
    fn(body)
    return body


def test_connector_validation_messages(h):
    s = h.server()
    act = lambda b: b["actions"][0]  # noqa: E731
    cases = [
        (lambda b: b.pop("name"), "Connector name is null"),
        (lambda b: b.pop("version"), "Connector version is null"),
        (lambda b: b.pop("protocol"), "Connector protocol is null"),
        (lambda b: b.update(protocol="grpc"),
         "Unsupported connector protocol. Please use one of [aws_sigv4, http]"),
        (lambda b: b.pop("credential"), "Connector credential is null or empty list"),
        (lambda b: b.update(credential={}), "Connector credential is null or empty list"),
        (lambda b: b.pop("actions"), "No actions configured for this connector"),
        (lambda b: b.update(actions=[]), "No actions configured for this connector"),
        (lambda b: act(b).pop("action_type"), "action type can't be null"),
        (lambda b: act(b).pop("method"), "method can't be null"),
        (lambda b: act(b).pop("url"), "url can't be null"),
        (lambda b: act(b).update(action_type="foo"),
         "No enum constant org.opensearch.ml.common.connector.ConnectorAction.ActionType.FOO"),
        (lambda b: act(b).update(headers={"Authorization": "Bearer ${parameters.key}"}),
         "Header 'Authorization' cannot use ${parameters.*} placeholders for security reasons. "
         "Use ${credential.*} instead."),
        (lambda b: act(b).update(headers={"X-API-Key": "${parameters.api_key}"}),
         "Header 'X-API-Key' cannot use ${parameters.*} placeholders for security reasons. "
         "Use ${credential.*} instead."),
        (lambda b: b.update(client_config={"retry_backoff_policy": "linear"}),
         "Unsupported retry backoff policy"),
    ]
    for i, (fn, reason) in enumerate(cases):
        r = s.post(ML + "/connectors/_create", _mutated(fn))
        assert r.status == 400, (i, reason, r)
        t, why = r.error()
        assert why == reason, (i, reason, r)
        if reason != "Unsupported retry backoff policy":
            assert t == "illegal_argument_exception", (i, r)
    sig = sigv4_connector()
    sig_cases = [
        (lambda b: b["credential"].pop("access_key"), "Missing credential"),
        (lambda b: b["credential"].pop("secret_key"), "Missing credential"),
        (lambda b: b["parameters"].pop("service_name"), "Missing service name"),
        (lambda b: b["parameters"].pop("region"), "Missing region"),
    ]
    for fn, reason in sig_cases:
        body = _mutated(fn, sig)
        if reason == "Missing region":
            body["actions"][0]["url"] = "https://bedrock-runtime.us-east-1.amazonaws.com/model/x"
        r = s.post(ML + "/connectors/_create", body)
        expect_error(r, 400, reason, "illegal_argument_exception")
    # Other headers may use parameters.
    ok = _mutated(lambda b: b["actions"][0]["headers"].update({"X-Model": "${parameters.model}"}))
    create_connector(s, ok)
    assert total(s, "connectors") == 1


def test_connector_trusted_endpoints(h):
    s = h.server()
    local = local_connector()
    r = s.post(ML + "/connectors/_create", local)
    expect_error(r, 400, NOT_TRUSTED, "illegal_argument_exception")
    # The URL is rendered with the connector's own parameters before matching.
    rendered = completions_connector()
    rendered["actions"][0]["url"] = "https://${parameters.endpoint}/v1"
    create_connector(s, rendered)
    evil = copy.deepcopy(rendered)
    evil["parameters"]["endpoint"] = "evil.example.com"
    expect_error(s.post(ML + "/connectors/_create", evil), 400, NOT_TRUSTED)
    # Unresolved placeholders stay literal.
    literal_tail = completions_connector()
    literal_tail["actions"][0]["url"] = "https://api.openai.com/v1/batches/${parameters.id}"
    create_connector(s, literal_tail)
    literal_host = completions_connector()
    literal_host["actions"][0]["url"] = "https://${parameters.host}/v1"
    expect_error(s.post(ML + "/connectors/_create", literal_host), 400, NOT_TRUSTED)
    put_settings(s, {TRUSTED: ["^https://\\$\\{parameters\\.host\\}/v1$"]})
    create_connector(s, literal_host)
    # Full match, not a substring search.
    prefix = completions_connector()
    prefix["actions"][0]["url"] = "https://${parameters.host}/v1/more"
    expect_error(s.post(ML + "/connectors/_create", prefix), 400, NOT_TRUSTED)
    # Every action is checked.
    two = completions_connector()
    two["actions"][0]["url"] = "https://${parameters.host}/v1"
    two["actions"].append({"action_type": "batch_predict", "method": "POST",
                           "url": "https://elsewhere.example/v1", "request_body": "{}"})
    expect_error(s.post(ML + "/connectors/_create", two), 400, NOT_TRUSTED)
    # 127.0.0.1 once trusted.
    trust_local(s)
    cid = create_connector(s, local)
    assert get_doc(s, "connectors", cid)["actions"][0]["url"] == "http://127.0.0.1:9/v1/x"
    expect_error(s.post(ML + "/connectors/_create", completions_connector()), 400, NOT_TRUSTED)
    # An empty list allows nothing.
    put_settings(s, {TRUSTED: []})
    expect_error(s.post(ML + "/connectors/_create", local), 400, NO_TRUSTED,
                 "illegal_argument_exception")
    # Back to the defaults.
    put_settings(s, {TRUSTED: None})
    create_connector(s, completions_connector())
    expect_error(s.post(ML + "/connectors/_create", local), 400, NOT_TRUSTED)
    assert total(s, "connectors") == 5


def test_connector_process_functions(h):
    s = h.server()
    body = completions_connector()
    body["actions"][0]["pre_process_function"] = "connector.pre_process.openai.embedding"
    body["actions"][0]["post_process_function"] = "connector.post_process.openai.embedding"
    cid = create_connector(s, body)
    a = get_doc(s, "connectors", cid)["actions"][0]
    assert a["pre_process_function"] == "connector.pre_process.openai.embedding", a
    assert a["post_process_function"] == "connector.post_process.openai.embedding", a
    bad = [
        ("pre_process_function", "connector.pre_process.nope.embedding"),
        ("post_process_function", "connector.post_process.nope.embedding"),
        ("pre_process_function", "connector.post_process.openai.embedding"),
        ("post_process_function", "return params['response'][0];"),
        ("pre_process_function",
         "\n    StringBuilder builder = new StringBuilder();\n    return builder.toString();"),
    ]
    for key, fn in bad:
        body = completions_connector()
        body["actions"][0][key] = fn
        r = s.post(ML + "/connectors/_create", body)
        assert r.status == 400, (key, fn, r)
        _, why = r.error()
        assert fn in why, (fn, r)
    assert total(s, "connectors") == 1


def test_connector_access_fields_refused(h):
    s = h.server()
    for extra in ({"access_mode": "public"}, {"access_mode": "private"},
                  {"backend_roles": ["IT"]}, {"add_all_backend_roles": True}):
        body = completions_connector()
        body.update(extra)
        r = s.post(ML + "/connectors/_create", body)
        expect_error(r, 400, CONNECTOR_AC)
    assert total(s, "connectors") == 0


def test_remote_inference_disabled(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    put_settings(s, {REMOTE_ON: False})
    r = s.post(ML + "/connectors/_create", completions_connector())
    expect_error(r, 400, REMOTE_DISABLED)
    r = s.post(ML + "/models/_register", remote_model("m", cid))
    expect_error(r, 400, REMOTE_DISABLED)
    inline = remote_model("m2", connector=completions_connector())
    expect_error(s.post(ML + "/models/_register", inline), 400, REMOTE_DISABLED)
    before = get_doc(s, "connectors", cid)
    r = s.put(ML + "/connectors/" + cid, {"name": "while disabled"})
    expect_error(r, 400, REMOTE_DISABLED)
    assert get_doc(s, "connectors", cid) == before
    assert total(s, "connectors") == 1
    assert total(s, "models") == 0
    put_settings(s, {REMOTE_ON: None})
    create_connector(s, completions_connector())
    register_model(s, remote_model("m", cid))


def test_connector_get_unknown(h):
    s = h.server()
    r = s.get(ML + "/connectors/111222333")
    expect_error(r, 404, "Failed to find connector", "status_exception")
    create_connector(s, completions_connector())
    r = s.get(ML + "/connectors/111222333")
    expect_error(r, 404, "Failed to find connector with the provided connector id: 111222333",
                 "status_exception")


def test_connector_update(h):
    s = h.server()
    cid = create_connector(s, completions_connector("sk-old"))
    before = get_doc(s, "connectors", cid)
    time.sleep(0.01)
    new_action = {"action_type": "predict", "method": "POST",
                  "url": "https://${parameters.endpoint}/v1/chat/completions",
                  "headers": {"Authorization": "Bearer ${credential.new_key}"},
                  "request_body": "{ \"model\": \"${parameters.model}\" }"}
    r = s.put(ML + "/connectors/" + cid, {"name": "Renamed Connector",
                                          "parameters": {"model": "gpt-4", "extra": 1},
                                          "credential": {"new_key": "sk-new"},
                                          "actions": [new_action]})
    j = expect_write(r, "connectors", cid, "updated")
    assert j["_version"] == 2, j
    doc = get_doc(s, "connectors", cid)
    assert "credential" not in doc, doc
    assert doc["name"] == "Renamed Connector", doc
    assert doc["description"] == before["description"], doc
    assert doc["version"] == "1" and doc["protocol"] == "http", doc
    assert doc["parameters"] == dict(before["parameters"], model="gpt-4", extra="1"), doc
    assert doc["actions"] == [dict(new_action, action_type="PREDICT")], doc
    assert doc["client_config"] == before["client_config"], doc
    assert doc["created_time"] == before["created_time"], doc
    assert doc["last_updated_time"] >= before["last_updated_time"], doc
    # A second update bumps the version again; description only.
    r = s.put(ML + "/connectors/" + cid, {"description": "changed"})
    j = expect_write(r, "connectors", cid, "updated")
    assert j["_version"] == 3, j
    doc2 = get_doc(s, "connectors", cid)
    assert doc2["description"] == "changed", doc2
    assert doc2["parameters"] == doc["parameters"] and doc2["actions"] == doc["actions"], doc2
    # Search sees the update.
    hits = search(s, "connectors", {"query": {"ids": {"values": [cid]}}})["hits"]["hits"]
    assert hits[0]["_source"]["name"] == "Renamed Connector", hits
    assert "credential" not in hits[0]["_source"], hits


def test_connector_update_refusals(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    before = get_doc(s, "connectors", cid)
    untrusted = {"action_type": "predict", "method": "POST", "url": "http://127.0.0.1:9/x",
                 "request_body": "{}"}
    r = s.put(ML + "/connectors/" + cid, {"name": "should not stick", "actions": [untrusted]})
    expect_error(r, 400, NOT_TRUSTED)
    assert get_doc(s, "connectors", cid) == before
    # Moving the endpoint parameter somewhere untrusted breaks the rendered URL.
    r = s.put(ML + "/connectors/" + cid, {"parameters": {"endpoint": "evil.example.com"}})
    expect_error(r, 400, NOT_TRUSTED)
    assert get_doc(s, "connectors", cid) == before
    bad_header = dict(untrusted, url="https://api.openai.com/v1/x",
                      headers={"Authorization": "${parameters.k}"})
    r = s.put(ML + "/connectors/" + cid, {"actions": [bad_header]})
    expect_error(r, 400, "Header 'Authorization' cannot use ${parameters.*} placeholders for "
                         "security reasons. Use ${credential.*} instead.")
    r = s.put(ML + "/connectors/" + cid, {"client_config": {"retry_backoff_policy": "linear"}})
    expect_error(r, 400, "Unsupported retry backoff policy")
    r = s.put(ML + "/connectors/" + cid, {"access_mode": "public"})
    expect_error(r, 400, CONNECTOR_AC)
    assert get_doc(s, "connectors", cid) == before
    r = s.put(ML + "/connectors/" + cid, raw=b"")
    expect_error(r, 400, "Failed to update connector: Request body is empty", "parse_exception")
    r = s.put(ML + "/connectors/nope123", {"name": "x"})
    expect_error(r, 404)
    assert get_doc(s, "connectors", cid) == before
    # Still updatable afterwards; the version counts only successful writes.
    j = expect_write(s.put(ML + "/connectors/" + cid, {"name": "ok"}), "connectors", cid,
                     "updated")
    assert j["_version"] == 2, j


def test_connector_delete(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    other = create_connector(s, chat_connector())
    expect_write(s.delete(ML + "/connectors/" + cid), "connectors", cid, "deleted")
    expect_error(s.get(ML + "/connectors/" + cid), 404,
                 "Failed to find connector with the provided connector id: " + cid)
    r = s.delete(ML + "/connectors/" + cid)
    assert r.status == 404, r
    assert get_doc(s, "connectors", other)["name"] == "OpenAI Chat Connector"
    assert total(s, "connectors") == 1


def test_connector_delete_in_use(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    reg = register_model(s, remote_model("m", cid))
    mid = reg["model_id"]
    r = s.delete(ML + "/connectors/" + cid)
    expect_error(r, 409, "1 models are still using this connector, please delete or update the "
                         "models first: [%s]" % mid, "status_exception")
    assert get_doc(s, "connectors", cid)["name"] == "OpenAI Connector"
    mid2 = register_model(s, remote_model("m2", cid))["model_id"]
    r = s.delete(ML + "/connectors/" + cid)
    assert r.status == 409, r
    _, why = r.error()
    assert why.startswith("2 models are still using this connector"), r
    assert mid in why and mid2 in why, r
    expect_write(s.delete(ML + "/models/" + mid), "models", mid, "deleted")
    expect_write(s.delete(ML + "/models/" + mid2), "models", mid2, "deleted")
    expect_write(s.delete(ML + "/connectors/" + cid), "connectors", cid, "deleted")


# -- models -----------------------------------------------------------------------------------

def test_model_register_full(h):
    s = h.server()
    t0 = now_ms()
    cid = create_connector(s, completions_connector())
    gid = register_group(s, "remote_model_group", description="This is an example description")
    prompt = {"prompt": {"type": "string"}}
    iface = {"input": {"properties": {"parameters": {"properties": prompt}}},
             "output": {"properties": {"inference_results": {"type": "array"}}}}
    body = remote_model("openAI-gpt-3.5-turbo", cid, gid,
                        deploy_setting={"model_ttl_minutes": 0.05, "is_auto_deploy_enabled": True},
                        rate_limiter={"limit": "10", "unit": "SECONDS"},
                        is_enabled=True, interface=iface)
    r = s.post(ML + "/models/_register", body)
    assert r.status == 200, r
    assert set(r.json) == {"task_id", "status", "model_id"}, r
    assert r.json["status"] == "CREATED", r
    mid, tid = r.json["model_id"], r.json["task_id"]
    assert AUTO_ID.match(mid) and AUTO_ID.match(tid), r
    task = wait_task(s, tid)
    assert set(task) == {"model_id", "task_type", "function_name", "state", "worker_node",
                         "create_time", "last_update_time", "is_async"}, task
    assert task["model_id"] == mid, task
    assert task["task_type"] == "REGISTER_MODEL", task
    assert task["function_name"] == "REMOTE", task
    assert task["state"] == "COMPLETED", task
    assert task["is_async"] is False, task
    assert isinstance(task["worker_node"], list) and len(task["worker_node"]) == 1, task
    node = task["worker_node"][0]
    assert AUTO_ID.match(node), task
    node_file = os.path.join(s.data_dir, "node.id")
    if os.path.exists(node_file):
        with open(node_file) as f:
            assert node in f.read(), task
    check_time(task["create_time"], t0)
    check_time(task["last_update_time"], t0)
    assert task["last_update_time"] >= task["create_time"], task
    doc = get_doc(s, "models", mid)
    assert set(doc) <= MODEL_FIELDS, doc
    assert doc["name"] == "openAI-gpt-3.5-turbo", doc
    assert doc["model_group_id"] == gid, doc
    assert doc["algorithm"] == "REMOTE", doc
    assert doc["model_version"] == "1", doc
    assert doc["description"] == "test model", doc
    assert doc["model_state"] == "REGISTERED", doc
    assert doc["deploy_setting"] == {"model_ttl_minutes": 0.05, "is_auto_deploy_enabled": True}, doc
    assert doc["is_enabled"] is True, doc
    assert doc["rate_limiter"] == {"limit": "10", "unit": "SECONDS"}, doc
    assert doc["connector_id"] == cid, doc
    assert "connector" not in doc, doc
    assert isinstance(doc["interface"], dict), doc
    assert set(doc["interface"]) == {"input", "output"}, doc
    for k in ("created_time", "last_updated_time", "last_registered_time"):
        check_time(doc[k], t0)
    group = get_doc(s, "model_groups", gid)
    assert group["latest_version"] == 1, group
    assert group["last_updated_time"] >= group["created_time"], group
    # function_name is case-insensitive.
    r = s.post(ML + "/models/_register", remote_model("upper", cid, gid, function_name="REMOTE"))
    assert r.status == 200, r
    doc2 = get_doc(s, "models", r.json["model_id"])
    assert doc2["algorithm"] == "REMOTE" and doc2["model_version"] == "2", doc2
    assert get_doc(s, "model_groups", gid)["latest_version"] == 2
    # The _upload alias.
    r = s.post(ML + "/models/_upload", remote_model("uploaded", cid, gid))
    assert r.status == 200, r
    assert get_doc(s, "models", r.json["model_id"])["model_version"] == "3"


def test_model_register_auto_group(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    first = register_model(s, remote_model("auto-model", cid, description="auto description"))
    m1 = get_doc(s, "models", first["model_id"])
    gid = m1["model_group_id"]
    assert AUTO_ID.match(gid) or gid, m1
    assert m1["model_version"] == "1", m1
    group = get_doc(s, "model_groups", gid)
    assert group["name"] == "auto-model", group
    assert group["latest_version"] == 1, group
    assert group["access"] == "public", group
    assert group.get("description") == "auto description", group
    second = register_model(s, remote_model("auto-model", cid))
    m2 = get_doc(s, "models", second["model_id"])
    assert m2["model_group_id"] == gid, m2
    assert m2["model_version"] == "2", m2
    assert get_doc(s, "model_groups", gid)["latest_version"] == 2
    # A different name gets its own group.
    third = register_model(s, remote_model("other-model", cid))
    m3 = get_doc(s, "models", third["model_id"])
    assert m3["model_group_id"] != gid and m3["model_version"] == "1", m3
    c = count_all(s)
    assert c == {"model_groups": 2, "connectors": 1, "models": 3, "tasks": 3}, c
    # An explicitly registered group named like a model is reused.
    gid2 = register_group(s, "named-group")
    m4 = get_doc(s, "models", register_model(s, remote_model("named-group", cid))["model_id"])
    assert m4["model_group_id"] == gid2 and m4["model_version"] == "1", m4


def test_model_register_inline_connector(h):
    s = h.server()
    secret = "sk-INLINE-SECRET-4711"
    conn = completions_connector(secret)
    r = s.post(ML + "/models/_register", remote_model("inline", connector=conn))
    assert r.status == 200, r
    assert secret not in r.body.decode("utf-8", "replace"), r
    mid = r.json["model_id"]
    raw = s.get(ML + "/models/" + mid)
    assert raw.status == 200, raw
    assert secret.encode() not in raw.body, raw
    doc = raw.json
    assert "connector_id" not in doc, doc
    c = doc["connector"]
    assert "credential" not in c, doc
    assert c["name"] == "OpenAI Connector" and c["version"] == "1", c
    assert c["protocol"] == "http", c
    assert c["parameters"]["max_tokens"] == "7", c
    assert c["actions"][0]["action_type"] == "PREDICT", c
    assert c["client_config"] == dict(CLIENT_CONFIG_DEFAULTS, max_connection=20,
                                      connection_timeout=50, read_timeout=50), c
    assert doc["model_state"] == "REGISTERED" and doc["algorithm"] == "REMOTE", doc
    # An inline connector goes through the connector validation.
    bad = completions_connector()
    bad["actions"][0]["url"] = "http://127.0.0.1:9/x"
    expect_error(s.post(ML + "/models/_register", remote_model("bad", connector=bad)), 400,
                 NOT_TRUSTED)
    bad = completions_connector()
    del bad["credential"]
    expect_error(s.post(ML + "/models/_register", remote_model("bad", connector=bad)), 400,
                 "Connector credential is null or empty list")
    assert total(s, "models") == 1
    assert total(s, "connectors") == 0


def test_model_register_validation(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    gid = register_group(s, "g")
    for fn in (None, "TEXT_EMBEDDING", "text_embedding", "KMEANS"):
        body = remote_model("m", cid, gid)
        if fn is None:
            del body["function_name"]
        else:
            body["function_name"] = fn
        r = s.post(ML + "/models/_register", body)
        expect_error(r, 400, contains="remote models only")
    body = remote_model("m", cid, gid)
    del body["name"]
    expect_error(s.post(ML + "/models/_register", body), 400, "model name is null")
    expect_error(s.post(ML + "/models/_register", remote_model("m", group=gid)), 400,
                 "You must provide connector content when creating a remote model without "
                 "connector id!")
    r = s.post(ML + "/models/_register", remote_model("m", "nopeconnector", gid))
    expect_error(r, 404, "Failed to find connector:nopeconnector")
    r = s.post(ML + "/models/_register", remote_model("m", cid, "nopegroup"))
    expect_error(r, 404, "Model Group Response is empty for nopegroup",
                 "m_l_resource_not_found_exception")
    for limit in ("0", "-1"):
        body = remote_model("m", cid, gid, rate_limiter={"limit": limit, "unit": "SECONDS"})
        expect_error(s.post(ML + "/models/_register", body), 400,
                     "Limit field must be a positive number.")
    body = remote_model("m", cid, gid, rate_limiter={"limit": "5", "unit": "WEEKS"})
    expect_error(s.post(ML + "/models/_register", body), 400,
                 "No enum constant java.util.concurrent.TimeUnit.WEEKS")
    r = s.post(ML + "/models/_register", raw=b"")
    expect_error(r, 400)
    c = count_all(s)
    assert c["models"] == 0, c
    assert get_doc(s, "model_groups", gid)["latest_version"] == 0
    # Still works after all that.
    register_model(s, remote_model("m", cid, gid))
    assert get_doc(s, "model_groups", gid)["latest_version"] == 1


def test_model_custom_id(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    r = s.post(ML + "/models/_register", remote_model("m", cid, model_id="my_model-1"))
    assert r.status == 200, r
    assert r.json["model_id"] == "my_model-1" and r.json["status"] == "CREATED", r
    assert get_doc(s, "models", "my_model-1")["name"] == "m"
    assert get_doc(s, "tasks", r.json["task_id"])["model_id"] == "my_model-1"
    r = s.post(ML + "/models/_register", remote_model("m", cid, model_id="my_model-1"))
    expect_error(r, 409, "model id 'my_model-1' already exists")
    for bad in ("-x", "a/b", "../etc", "x" * 600, "a b", ""):
        r = s.post(ML + "/models/_register", remote_model("m", cid, model_id=bad))
        expect_error(r, 400)
    # Custom connector ids too.
    body = completions_connector()
    body["connector_id"] = "my-connector"
    assert create_connector(s, body) == "my-connector"
    expect_error(s.post(ML + "/connectors/_create", body), 409,
                 "connector id 'my-connector' already exists")
    body["connector_id"] = "-bad"
    expect_error(s.post(ML + "/connectors/_create", body), 400)
    assert total(s, "models") == 1
    assert total(s, "connectors") == 2


def test_model_get_unknown(h):
    s = h.server()
    expect_error(s.get(ML + "/models/111222333"), 404, "Fail to find model", "status_exception")
    cid = create_connector(s, completions_connector())
    register_model(s, remote_model("m", cid))
    expect_error(s.get(ML + "/models/111222333"), 404,
                 "Failed to find model with the provided model id: 111222333", "status_exception")


def test_model_update(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    reg = register_model(s, remote_model("m", cid, rate_limiter={"limit": "10",
                                                                   "unit": "SECONDS"}))
    mid = reg["model_id"]
    before = get_doc(s, "models", mid)
    time.sleep(0.01)
    upd = {"description": "new description", "name": "new name",
           "rate_limiter": {"limit": "100", "unit": "MINUTES"},
           "deploy_setting": {"model_ttl_minutes": 2, "is_auto_deploy_enabled": False},
           "is_enabled": False}
    r = s.put(ML + "/models/" + mid, upd)
    expect_write(r, "models", mid, "updated")
    doc = get_doc(s, "models", mid)
    assert doc["description"] == "new description" and doc["name"] == "new name", doc
    assert doc["rate_limiter"] == {"limit": "100", "unit": "MINUTES"}, doc
    assert doc["deploy_setting"]["model_ttl_minutes"] == 2, doc
    assert doc["deploy_setting"]["is_auto_deploy_enabled"] is False, doc
    assert doc["is_enabled"] is False, doc
    assert doc["connector_id"] == cid and doc["model_group_id"] == before["model_group_id"], doc
    assert doc["model_version"] == "1" and doc["model_state"] == "REGISTERED", doc
    assert doc["created_time"] == before["created_time"], doc
    assert doc["last_updated_time"] >= before["last_updated_time"], doc
    # Validation applies to updates too.
    r = s.put(ML + "/models/" + mid, {"rate_limiter": {"limit": "0", "unit": "SECONDS"}})
    expect_error(r, 400, "Limit field must be a positive number.")
    r = s.put(ML + "/models/" + mid, {"rate_limiter": {"limit": "1", "unit": "WEEKS"}})
    expect_error(r, 400, "No enum constant java.util.concurrent.TimeUnit.WEEKS")
    assert get_doc(s, "models", mid) == doc
    r = s.put(ML + "/models/nope123", {"description": "x"})
    expect_error(r, 404, "Failed to find model to update with the provided model id: nope123")
    r = s.put(ML + "/models/" + mid, raw=b"")
    expect_error(r, 400, "Update model request has empty body")
    # Switch the standalone connector.
    cid2 = create_connector(s, chat_connector())
    expect_write(s.put(ML + "/models/" + mid, {"connector_id": cid2}), "models", mid, "updated")
    assert get_doc(s, "models", mid)["connector_id"] == cid2
    expect_write(s.delete(ML + "/connectors/" + cid), "connectors", cid, "deleted")


def test_model_update_connector_rules(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    by_id = register_model(s, remote_model("by-id", cid))["model_id"]
    inline = register_model(s, remote_model("inline",
                                            connector=completions_connector("sk-first")))
    inline = inline["model_id"]
    r = s.put(ML + "/models/" + inline, {"connector_id": cid})
    expect_error(r, 400, "This remote does not have a connector_id field, maybe it uses an "
                         "internal connector.")
    r = s.put(ML + "/models/" + by_id, {"connector": {"description": "x"}})
    expect_error(r, 400, "Cannot update connector settings for this model. The model was created "
                         "with a connector_id and does not have an inline connector.")
    for mid in (by_id, inline):
        r = s.put(ML + "/models/" + mid, {"connector_id": cid,
                                           "connector": {"description": "x"}})
        expect_error(r, 400, "Model cannot have both stand-alone connector and internal "
                             "connector. Please check your update input body.")
    before = get_doc(s, "models", inline)
    secret = "sk-ROTATED-SECRET-9090"
    r = s.put(ML + "/models/" + inline, {"connector": {"credential": {"openAI_key": secret},
                                                        "parameters": {"model": "gpt-4"}}})
    expect_write(r, "models", inline, "updated")
    raw = s.get(ML + "/models/" + inline)
    assert raw.status == 200 and secret.encode() not in raw.body, raw
    c = raw.json["connector"]
    assert "credential" not in c, raw.json
    assert c["parameters"] == dict(before["connector"]["parameters"], model="gpt-4"), c
    assert c["actions"] == before["connector"]["actions"], c
    # An inline-connector update still honours the trusted endpoints.
    bad = {"actions": [{"action_type": "predict", "method": "POST",
                        "url": "http://127.0.0.1:9/x", "request_body": "{}"}]}
    expect_error(s.put(ML + "/models/" + inline, {"connector": bad}), 400, NOT_TRUSTED)
    assert get_doc(s, "models", inline) == raw.json
    r = s.put(ML + "/models/" + by_id, {"connector_id": "nopeconnector"})
    assert r.status in (400, 404), r
    r.error()
    assert get_doc(s, "models", by_id)["connector_id"] == cid


def test_model_delete(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    reg = register_model(s, remote_model("m", cid))
    mid, tid = reg["model_id"], reg["task_id"]
    gid = get_doc(s, "models", mid)["model_group_id"]
    keep = register_model(s, remote_model("keep", cid))["model_id"]
    expect_write(s.delete(ML + "/models/" + mid), "models", mid, "deleted")
    expect_error(s.get(ML + "/models/" + mid), 404,
                 "Failed to find model with the provided model id: " + mid)
    expect_error(s.delete(ML + "/models/" + mid), 404, "Failed to find model")
    expect_error(s.delete(ML + "/models/111222333"), 404, "Failed to find model")
    # The group, the task and the connector stay.
    assert get_doc(s, "model_groups", gid)["latest_version"] == 1
    assert get_doc(s, "tasks", tid)["model_id"] == mid
    assert get_doc(s, "connectors", cid)["name"] == "OpenAI Connector"
    assert get_doc(s, "models", keep)["name"] == "keep"
    # The next version in the group is 2, not 1 again.
    again = register_model(s, remote_model("m", cid))
    assert get_doc(s, "models", again["model_id"])["model_version"] == "2"
    # Once no model exists at all, the "index missing" text applies.
    for m in (keep, again["model_id"]):
        expect_write(s.delete(ML + "/models/" + m), "models", m, "deleted")
    expect_error(s.get(ML + "/models/" + mid), 404, "Fail to find model")


# -- tasks ------------------------------------------------------------------------------------

def test_task_get_and_delete(h):
    s = h.server()
    expect_error(s.get(ML + "/tasks/111222333"), 404, "Failed to find task", "status_exception")
    expect_error(s.delete(ML + "/tasks/111222333"), 404, "Failed to find task")
    cid = create_connector(s, completions_connector())
    reg = register_model(s, remote_model("m", cid))
    tid = reg["task_id"]
    assert get_doc(s, "tasks", tid)["state"] == "COMPLETED"
    expect_error(s.get(ML + "/tasks/111222333"), 404, "Failed to find task", "status_exception")
    expect_write(s.delete(ML + "/tasks/" + tid), "tasks", tid, "deleted")
    expect_error(s.get(ML + "/tasks/" + tid), 404, "Failed to find task")
    expect_error(s.delete(ML + "/tasks/" + tid), 404, "Failed to find task")
    assert total(s, "tasks") == 0
    # The model is unaffected.
    assert get_doc(s, "models", reg["model_id"])["model_state"] == "REGISTERED"


# -- _search ----------------------------------------------------------------------------------

def test_search_fresh_is_empty(h):
    s = h.server()
    for kind in KINDS:
        for method in ("GET", "POST"):
            for body in (None, {"query": {"match_all": {}}, "size": 1000}, {}):
                j = search(s, kind, body, method)
                assert j["hits"]["total"]["value"] == 0, (kind, method, body, j)
                assert j["hits"]["hits"] == [], j


def test_search_counts_after_register(h):
    s = h.server()
    q = {"query": {"match_all": {}}, "size": 1000}
    for kind in KINDS:
        assert total(s, kind, q, "GET") == 0
    # clients.md item 7.
    cid = create_connector(s, completions_connector())
    assert total(s, "connectors", q, "GET") == 1
    # items 13 and 21: registerRemoteModel = group + model.
    gid = register_group(s, "remote_model_group", description="This is an example description")
    assert total(s, "model_groups", q, "GET") == 1
    reg = register_model(s, remote_model("m", cid, gid, version="1.0.0",
                                         interface={"input": {}, "output": {}}))
    for method in ("GET", "POST"):
        for body in (None, q):
            c = {k: total(s, k, body, method) for k in KINDS}
            assert c == {"model_groups": 1, "connectors": 1, "models": 1, "tasks": 1}, c
    j = search(s, "models", q, "GET")
    assert ids_of(j) == [reg["model_id"]], j
    assert j["hits"]["hits"][0]["_source"]["model_group_id"] == gid, j
    j = search(s, "tasks", q)
    assert ids_of(j) == [reg["task_id"]], j
    assert j["hits"]["hits"][0]["_source"]["task_type"] == "REGISTER_MODEL", j
    assert j["hits"]["hits"][0]["_source"]["model_id"] == reg["model_id"], j


def test_search_queries(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    g1 = register_group(s, "alpha one", description="red fox")
    g2 = register_group(s, "beta two", description="blue fox")
    g3 = register_group(s, "alpha three")
    g4 = register_group(s, "gamma four", description="red bird")
    m1 = register_model(s, remote_model("m1", cid, g2))
    m2 = register_model(s, remote_model("m2", cid, g4))
    m3 = register_model(s, remote_model("m3", cid, g4))
    G = "model_groups"
    everything = {g1, g2, g3, g4}

    j = search(s, G, {"query": {"match_all": {}}})
    assert set(ids_of(j)) == everything and j["hits"]["total"]["value"] == 4, j
    assert all(hit["_score"] == 1.0 for hit in j["hits"]["hits"]), j
    assert j["hits"]["max_score"] == 1.0, j
    for hit in j["hits"]["hits"]:
        assert hit["_source"] == get_doc(s, G, hit["_id"]), hit

    assert id_set(s, G, {"ids": {"values": [g1, g3, "nope"]}}) == {g1, g3}
    assert id_set(s, G, {"term": {"name.keyword": "beta two"}}) == {g2}
    assert id_set(s, G, {"term": {"name.keyword": {"value": "gamma four"}}}) == {g4}
    assert id_set(s, G, {"term": {"_id": g4}}) == {g4}
    assert id_set(s, G, {"term": {"name.keyword": "beta"}}) == set()
    assert id_set(s, G, {"terms": {"name.keyword": ["alpha one", "gamma four", "zzz"]}}) == \
        {g1, g4}
    assert id_set(s, G, {"terms": {"_id": [g2, g3]}}) == {g2, g3}
    assert id_set(s, G, {"match": {"name": "alpha"}}) == {g1, g3}
    assert id_set(s, G, {"match": {"description": "RED"}}) == {g1, g4}
    assert id_set(s, G, {"match": {"description": "red fox"}}) == {g1, g2, g4}
    assert id_set(s, G, {"match": {"description": {"query": "red fox", "operator": "and"}}}) == \
        {g1}
    assert id_set(s, G, {"range": {"latest_version": {"gte": 1}}}) == {g2, g4}
    assert id_set(s, G, {"range": {"latest_version": {"gt": 1}}}) == {g4}
    assert id_set(s, G, {"range": {"latest_version": {"lt": 1}}}) == {g1, g3}
    assert id_set(s, G, {"range": {"latest_version": {"gte": 1, "lte": 1}}}) == {g2}
    assert id_set(s, G, {"range": {"created_time": {"gte": 0}}}) == everything
    assert id_set(s, G, {"range": {"created_time": {"gt": now_ms() + 3600000}}}) == set()
    assert id_set(s, G, {"exists": {"field": "description"}}) == {g1, g2, g4}
    assert id_set(s, G, {"exists": {"field": "no_such_field"}}) == set()
    assert id_set(s, G, {"bool": {"must": [{"match": {"name": "alpha"}}],
                                  "must_not": [{"term": {"name.keyword": "alpha three"}}]}}) == {g1}
    assert id_set(s, G, {"bool": {"must_not": [{"match": {"name": "alpha"}}]}}) == {g2, g4}
    should = [{"term": {"name.keyword": "alpha one"}}, {"term": {"name.keyword": "beta two"}}]
    assert id_set(s, G, {"bool": {"should": should}}) == {g1, g2}
    assert id_set(s, G, {"bool": {"should": should, "minimum_should_match": 2}}) == set()
    assert id_set(s, G, {"bool": {"should": should + [{"match": {"description": "blue"}}],
                                  "minimum_should_match": 2}}) == {g2}
    assert id_set(s, G, {"bool": {"filter": [{"match_all": {}}], "should": should,
                                  "minimum_should_match": 1}}) == {g1, g2}
    assert id_set(s, G, {"bool": {"filter": [{"exists": {"field": "description"}}],
                                  "must_not": [{"range": {"latest_version": {"gte": 2}}}]}}) == \
        {g1, g2}

    # Filter-only bool: _score 0.0.
    j = search(s, G, {"query": {"bool": {"filter": [{"range": {"latest_version": {"gte": 1}}}]}}})
    assert set(ids_of(j)) == {g2, g4}, j
    assert all(hit["_score"] == 0.0 for hit in j["hits"]["hits"]), j
    j = search(s, G, {"query": {"bool": {"filter": {"term": {"_id": g1}}}}})
    assert ids_of(j) == [g1] and j["hits"]["hits"][0]["_score"] == 0.0, j

    # Sort and paging.
    j = search(s, G, {"query": {"match_all": {}}, "sort": [{"name.keyword": {"order": "asc"}}]})
    assert ids_of(j) == [g1, g3, g2, g4], j
    j = search(s, G, {"query": {"match_all": {}}, "sort": [{"name.keyword": "desc"}]})
    assert ids_of(j) == [g4, g2, g3, g1], j
    j = search(s, G, {"query": {"match_all": {}}, "sort": [{"name.keyword": "asc"}],
                      "from": 1, "size": 2})
    assert ids_of(j) == [g3, g2] and j["hits"]["total"]["value"] == 4, j
    j = search(s, G, {"query": {"match_all": {}}, "sort": [{"name.keyword": "asc"}],
                      "from": 3, "size": 2})
    assert ids_of(j) == [g4], j
    j = search(s, G, {"query": {"match_all": {}}, "from": 10})
    assert ids_of(j) == [] and j["hits"]["total"]["value"] == 4, j
    j = search(s, G, {"query": {"match_all": {}}, "size": 0})
    assert j["hits"]["hits"] == [] and j["hits"]["total"]["value"] == 4, j
    j = search(s, G, {"sort": [{"latest_version": {"order": "desc"}}, {"name.keyword": "asc"}]})
    assert ids_of(j) == [g4, g2, g1, g3], j
    # Paging without an explicit sort still visits every document once.
    seen = []
    for start in range(0, 4):
        seen += ids_of(search(s, G, {"query": {"match_all": {}}, "from": start, "size": 1}))
    assert sorted(seen) == sorted(everything), seen
    # Default size is 10.
    for i in range(8):
        register_group(s, "extra %d" % i)
    j = search(s, G, {"query": {"match_all": {}}})
    assert len(j["hits"]["hits"]) == 10 and j["hits"]["total"]["value"] == 12, j
    j = search(s, G, None, "GET")
    assert len(j["hits"]["hits"]) == 10 and j["hits"]["total"]["value"] == 12, j

    # _source filtering.
    q = {"query": {"ids": {"values": [g1]}}}
    hit = search(s, G, dict(q, _source=["name"]))["hits"]["hits"][0]
    assert hit["_source"] == {"name": "alpha one"}, hit
    hit = search(s, G, dict(q, _source={"includes": ["name", "description"]}))["hits"]["hits"][0]
    assert hit["_source"] == {"name": "alpha one", "description": "red fox"}, hit
    hit = search(s, G, dict(q, _source={"excludes": ["description", "created_time"]}))
    src = hit["hits"]["hits"][0]["_source"]
    assert "description" not in src and "created_time" not in src and src["name"] == "alpha one"
    hit = search(s, G, dict(q, _source={"includes": ["*_time"]}))["hits"]["hits"][0]
    assert set(hit["_source"]) == {"created_time", "last_updated_time"}, hit
    hit = search(s, G, dict(q, _source=False))["hits"]["hits"][0]
    assert "_source" not in hit, hit
    assert hit["_id"] == g1, hit

    # Models and tasks.
    M = "models"
    assert id_set(s, M, {"term": {"model_group_id": g4}}) == {m2["model_id"], m3["model_id"]}
    assert id_set(s, M, {"term": {"connector_id": cid}}) == \
        {m1["model_id"], m2["model_id"], m3["model_id"]}
    assert id_set(s, M, {"terms": {"model_state": ["REGISTERED", "DEPLOYED"]}}) == \
        {m1["model_id"], m2["model_id"], m3["model_id"]}
    assert id_set(s, M, {"term": {"model_state": "DEPLOYED"}}) == set()
    inline = register_model(s, remote_model("inline", connector=completions_connector()))
    assert id_set(s, M, {"exists": {"field": "connector"}}) == {inline["model_id"]}
    assert id_set(s, M, {"exists": {"field": "connector_id"}}) == \
        {m1["model_id"], m2["model_id"], m3["model_id"]}
    assert id_set(s, M, {"bool": {"must": [{"term": {"algorithm": "REMOTE"}}],
                                  "filter": [{"term": {"model_version": "2"}}]}}) == \
        {m3["model_id"]}
    T = "tasks"
    all_tasks = {m1["task_id"], m2["task_id"], m3["task_id"], inline["task_id"]}
    assert id_set(s, T, {"term": {"task_type": "REGISTER_MODEL"}}) == all_tasks
    assert id_set(s, T, {"term": {"state": "COMPLETED"}}) == all_tasks
    assert id_set(s, T, {"term": {"model_id": m2["model_id"]}}) == {m2["task_id"]}
    assert id_set(s, T, {"term": {"function_name": "REMOTE"}}) == all_tasks
    C = "connectors"
    cid2 = create_connector(s, chat_connector())
    assert id_set(s, C, {"term": {"name.keyword": "OpenAI Chat Connector"}}) == {cid2}
    assert id_set(s, C, {"match": {"name": "chat"}}) == {cid2}
    assert id_set(s, C, {"term": {"protocol": "http"}}) == {cid, cid2}


def test_search_bad_queries(h):
    s = h.server()
    register_group(s, "g")
    for kind in KINDS:
        for method in ("GET", "POST"):
            r = s.request(method, "%s/%s/_search" % (ML, kind),
                          body={"query": {"wildcard": {"name": "g*"}}})
            expect_error(r, 400, "unknown query [wildcard]", "parsing_exception")
    r = s.post(ML + "/model_groups/_search",
               {"query": {"bool": {"must": [{"query_string": {"query": "x"}}]}}})
    expect_error(r, 400, "unknown query [query_string]", "parsing_exception")
    for body in ('{"query": ', "[1,2]", '{"query": {"match_all": {}}, "size": "many"}',
                 '{"query": {"term": {}}}', '{"from": -1}'):
        r = s.post(ML + "/model_groups/_search", body)
        assert r.status == 400, (body, r)
        r.error()
    assert s.get("/").status == 200
    assert total(s, "model_groups") == 1


def test_search_never_shows_credentials(h):
    s = h.server()
    secret_c = "sk-SEARCH-CONNECTOR-SECRET"
    secret_m = "sk-SEARCH-INLINE-SECRET"
    cid = create_connector(s, completions_connector(secret_c))
    mid = register_model(s, remote_model("inline", connector=completions_connector(secret_m)))
    mid = mid["model_id"]
    bodies = [None, {"query": {"match_all": {}}},
              {"_source": ["credential", "connector.credential", "*"]},
              {"_source": {"includes": ["credential*", "connector.*"]}},
              {"_source": {"includes": ["*"], "excludes": []}},
              {"query": {"exists": {"field": "credential"}}},
              {"query": {"exists": {"field": "connector.credential"}}},
              {"query": {"term": {"credential.openAI_key": secret_c}}},
              {"query": {"term": {"connector.credential.openAI_key": secret_m}}}]
    for kind in ("connectors", "models"):
        for body in bodies:
            r = s.post("%s/%s/_search" % (ML, kind), body)
            if r.status != 200:
                expect_error(r, 400)
            assert secret_c.encode() not in r.body and secret_m.encode() not in r.body, r
            if r.status == 200:
                for hit in r.json["hits"]["hits"]:
                    src = hit.get("_source", {})
                    assert "credential" not in src, hit
                    assert "credential" not in src.get("connector", {}), hit
    j = search(s, "connectors", {"query": {"ids": {"values": [cid]}}})
    assert j["hits"]["hits"][0]["_source"]["name"] == "OpenAI Connector", j
    j = search(s, "models", {"query": {"ids": {"values": [mid]}}})
    assert j["hits"]["hits"][0]["_source"]["connector"]["name"] == "OpenAI Connector", j


# -- secrets at rest --------------------------------------------------------------------------

def _scan_dir(d, needles):
    """Returns [(file, needle)] for every needle found in any file under @d."""
    found = []
    for root, _, files in os.walk(d):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                data = f.read()
            for n in needles:
                if n in data:
                    found.append((path, n))
    return found


def pg_rows(s):
    """PostgreSQL mode: every row of every table of server @s's database, as (table, text
    bytes) pairs; [] with SQLite, whose database is a file in the data dir."""
    url = s.store_url()
    if url is None:
        return []
    db = url.split("?", 1)[0].rsplit("/", 1)[1]
    tables = psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db).split()
    assert "connectors" in tables and "models" in tables, tables
    return [(t, psql("SELECT x::text FROM %s AS x" % t, db).encode()) for t in tables]


def test_secrets_never_in_plaintext(h):
    s = h.server(args=["--log-level", "debug"])
    secrets = ["sk-PLANTED-SECRET-123", "sk-PLANTED-INLINE-456", "sk-PLANTED-ROTATED-789",
               "sk-PLANTED-INLINE-ROTATED-0AB", "AKIA-PLANTED-ACCESS", "PLANTED-SIGV4-SECRET",
               "sk-PLANTED-REFUSED-CDE"]
    bodies = []

    def keep(r):
        bodies.append(r.body)
        return r

    cid = create_connector(s, completions_connector(secrets[0]))
    reg = register_model(s, remote_model("inline", connector=completions_connector(secrets[1])))
    mid = reg["model_id"]
    register_model(s, remote_model("by-id", cid))
    expect_write(keep(s.put(ML + "/connectors/" + cid,
                            {"credential": {"openAI_key": secrets[2]}})),
                 "connectors", cid, "updated")
    expect_write(keep(s.put(ML + "/models/" + mid,
                            {"connector": {"credential": {"openAI_key": secrets[3]}}})),
                 "models", mid, "updated")
    sig = sigv4_connector()
    sig["credential"] = {"access_key": secrets[4], "secret_key": secrets[5]}
    sid = create_connector(s, sig)
    # A refused request must not echo the credential either.
    refused = completions_connector(secrets[6])
    refused["actions"][0]["url"] = "http://127.0.0.1:9/x"
    expect_error(keep(s.post(ML + "/connectors/_create", refused)), 400, NOT_TRUSTED)
    refused = dict(refused, protocol="nope")
    expect_error(keep(s.post(ML + "/connectors/_create", refused)), 400)
    for path in ("/connectors/" + cid, "/connectors/" + sid, "/models/" + mid,
                 "/tasks/" + reg["task_id"]):
        assert keep(s.get(ML + path)).status == 200
    for kind in KINDS:
        keep(s.get("%s/%s/_search" % (ML, kind)))
        keep(s.post("%s/%s/_search" % (ML, kind), {"query": {"match_all": {}}, "size": 100}))
    keep(s.get(SETTINGS + "?include_defaults=true"))
    for b in bodies:
        for sec in secrets:
            assert sec.encode() not in b, (sec, b[:300])
    assert s.stop() == 0
    time.sleep(0.1)
    needles = [sec.encode() for sec in secrets]
    found = _scan_dir(s.data_dir, needles)
    found += [(t, n) for t, data in pg_rows(s) for n in needles if n in data]
    assert not found, found
    log = s.log()
    for sec in secrets:
        assert sec not in log, sec
    key = os.path.join(s.data_dir, "master.key")
    assert os.path.isfile(key), os.listdir(s.data_dir)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600, oct(os.stat(key).st_mode)
    # Restart on the same data dir: everything is readable again.
    s.start()
    doc = get_doc(s, "connectors", cid)
    assert doc["name"] == "OpenAI Connector" and "credential" not in doc, doc
    doc = get_doc(s, "models", mid)
    assert "credential" not in doc["connector"], doc
    assert get_doc(s, "connectors", sid)["protocol"] == "aws_sigv4"
    c = count_all(s)
    assert c == {"model_groups": 2, "connectors": 2, "models": 2, "tasks": 2}, c


def test_master_key_env_and_restart(h):
    s = h.server()
    cid = create_connector(s, completions_connector("sk-KEY-TEST"))
    mid = register_model(s, remote_model("inline",
                                         connector=completions_connector("sk-KEY-TEST-2")))
    mid = mid["model_id"]
    key_file = os.path.join(s.data_dir, "master.key")
    assert os.path.isfile(key_file)
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    with open(key_file, "rb") as f:
        key_before = f.read()
    before = snapshot(s, [("connectors", cid), ("models", mid)])
    assert s.stop() == 0
    # A restart with a different master key still starts; documents are readable.
    s.env = {"MLRELAY_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    s.start()
    assert snapshot(s, [("connectors", cid), ("models", mid)]) == before
    cid2 = create_connector(s, completions_connector("sk-KEY-TEST-3"))
    assert get_doc(s, "connectors", cid2)["name"] == "OpenAI Connector"
    assert s.stop() == 0
    with open(key_file, "rb") as f:
        assert f.read() == key_before
    s.env = {}
    s.start()
    assert snapshot(s, [("connectors", cid), ("models", mid)]) == before
    assert total(s, "connectors") == 2


# -- hostile ids ------------------------------------------------------------------------------

HOSTILE = ["..%2F..%2Fetc", "..%2F..%2F..%2Fetc%2Fpasswd", "x" * 10240, "%00", "a%00b",
           "%C3%A9t%C3%A9", "%E2%80%AE%F0%9F%98%80", "%FF%FE", "..", "%2e%2e", "%25", "a%20b",
           "%22%27%3B--", "%7B%7D", "%5C..%5C", "%27%20OR%201=1%20--", "%0D%0AX-Injected:%201"]


def _hostile_problem(r, what):
    """None when @r is a 400/404 envelope (or a 404 not_found write response) in valid UTF-8
    JSON, else a description of what is wrong."""
    if r.status not in (400, 404):
        return (what, r.status, r.body[:200])
    try:
        j = json.loads(r.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return (what, r.status, "body is not UTF-8 JSON: %s" % e, r.body[:200])
    if not isinstance(j, dict):
        return (what, r.status, r.body[:200])
    if "error" in j:
        try:
            r.error()
        except AssertionError:
            return (what, r.status, "bad envelope", r.body[:200])
    elif not (r.status == 404 and j.get("result") == "not_found"):
        return (what, r.status, r.body[:200])
    return None


def test_hostile_ids_in_paths(h):
    s = h.server()
    cid = create_connector(s, completions_connector())
    reg = register_model(s, remote_model("m", cid))
    gid = get_doc(s, "models", reg["model_id"])["model_group_id"]
    before = count_all(s)
    problems = []
    for bad in HOSTILE:
        for kind in KINDS:
            path = "%s/%s/%s" % (ML, kind, bad)
            reqs = [("GET", None), ("DELETE", None)]
            if kind != "tasks":
                reqs.append(("PUT", {"description": "x"}))
            for method, body in reqs:
                p = _hostile_problem(s.request(method, path, body=body), (method, path[:80]))
                if p:
                    problems.append(p)
    assert s.get("/").status == 200
    assert count_all(s) == before
    assert get_doc(s, "model_groups", gid)["latest_version"] == 1
    assert get_doc(s, "connectors", cid)["name"] == "OpenAI Connector"
    # Hostile custom ids in bodies.
    for bad in ("../../etc/passwd", "a\u0000b", "x" * 10240, "\u00e9t\u00e9", "a/b", "%00"):
        for path, body in (("/model_groups/_register", {"name": "n", "model_group_id": bad}),
                           ("/connectors/_create", dict(completions_connector(),
                                                        connector_id=bad)),
                           ("/models/_register", remote_model("n", cid, model_id=bad))):
            r = s.post(ML + path, body)
            if r.status != 400:
                problems.append(("POST", path, repr(bad[:20]), r.status, r.body[:200]))
            else:
                p = _hostile_problem(r, ("POST", path, repr(bad[:20])))
                if p:
                    problems.append(p)
    if count_all(s) != before:
        problems.append(("documents were created by refused ids", before, count_all(s)))
    # Hostile ids as references.
    for bad in ("../x", "x" * 10240, "a\u0000b", "\u00e9"):
        for body in (remote_model("n", bad), remote_model("n", cid, bad)):
            p = _hostile_problem(s.post(ML + "/models/_register", body),
                                 ("POST register", repr(bad[:20])))
            if p:
                problems.append(p)
    # Still serving normally.
    register_model(s, remote_model("after", cid))
    assert s.get("/").status == 200
    assert not problems, "\n".join(repr(p) for p in problems)


def test_generated_ids_are_valid_custom_ids(h):
    """Generated ids are 20 URL-safe base64 characters that never start with '-' or '_', so
    every generated id is also a valid custom id and works as a reference everywhere."""
    s = h.server()
    cid = create_connector(s, completions_connector())
    pattern = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{19}$")
    seen = set()
    for i in range(150):
        gid = register_group(s, "group %d" % i)
        reg = register_model(s, remote_model("m%d" % i, cid, gid))
        for generated in (gid, reg["model_id"], reg["task_id"]):
            assert pattern.match(generated), generated
            assert generated not in seen, generated
            seen.add(generated)
        assert get_doc(s, "models", reg["model_id"])["model_group_id"] == gid

# -- restarts ---------------------------------------------------------------------------------

def _populate(s):
    """Creates one of everything; returns the (kind, id) refs."""
    cid = create_connector(s, completions_connector("sk-persist"))
    gid = register_group(s, "persist group", description="persisted")
    r1 = register_model(s, remote_model("m", cid, gid,
                                        deploy_setting={"model_ttl_minutes": 0.05,
                                                        "is_auto_deploy_enabled": True},
                                        rate_limiter={"limit": "10", "unit": "SECONDS"}))
    r2 = register_model(s, remote_model("inline", connector=completions_connector("sk-p2")))
    expect_write(s.put(ML + "/connectors/" + cid, {"name": "updated name",
                                                   "parameters": {"model": "gpt-4"}}),
                 "connectors", cid, "updated")
    expect_write(s.put(ML + "/models/" + r1["model_id"], {"description": "updated"}),
                 "models", r1["model_id"], "updated")
    r = s.put(ML + "/model_groups/" + gid, {"description": "updated group"})
    assert r.status == 200, r
    doomed = register_group(s, "doomed")
    expect_write(s.delete(ML + "/model_groups/" + doomed), "model_groups", doomed, "deleted")
    gone = register_model(s, remote_model("gone", cid, gid))
    expect_write(s.delete(ML + "/models/" + gone["model_id"]), "models", gone["model_id"],
                 "deleted")
    expect_write(s.delete(ML + "/tasks/" + gone["task_id"]), "tasks", gone["task_id"],
                 "deleted")
    auto_gid = get_doc(s, "models", r2["model_id"])["model_group_id"]
    refs = [("connectors", cid), ("model_groups", gid), ("model_groups", auto_gid),
            ("models", r1["model_id"]), ("models", r2["model_id"]),
            ("tasks", r1["task_id"]), ("tasks", r2["task_id"])]
    missing = [("model_groups", doomed), ("models", gone["model_id"]),
               ("tasks", gone["task_id"])]
    return refs, missing


def _check_after_restart(s, refs, missing, before, counts):
    assert snapshot(s, refs) == before
    for kind, i in missing:
        r = s.get("%s/%s/%s" % (ML, kind, i))
        assert r.status == 404, (kind, i, r)
    assert count_all(s) == counts
    # The stores keep working after the restart.
    doc = before[refs[0]]
    assert doc["name"] == "updated name" and doc["parameters"]["model"] == "gpt-4", doc
    j = expect_write(s.put(ML + "/connectors/" + refs[0][1], {"description": "again"}),
                     "connectors", refs[0][1], "updated")
    assert j["_version"] == 3, j
    r = s.post(ML + "/model_groups/_register", {"name": "persist group"})
    assert r.status == 400, r
    r = s.post(ML + "/models/_register", remote_model("m", refs[0][1], refs[1][1]))
    assert r.status == 200, r
    # "gone" took version 2 and deletion does not give it back.
    assert get_doc(s, "models", r.json["model_id"])["model_version"] == "3"


def test_restart_sigterm_persists_everything(h):
    s = h.server()
    refs, missing = _populate(s)
    before = snapshot(s, refs)
    counts = count_all(s)
    assert counts == {"model_groups": 2, "connectors": 1, "models": 2, "tasks": 2}, counts
    assert s.stop() == 0
    s.start()
    _check_after_restart(s, refs, missing, before, counts)


def test_restart_kill9_persists_acknowledged(h):  # slow
    s = h.server()
    refs, missing = _populate(s)
    before = snapshot(s, refs)
    counts = count_all(s)
    s.kill9()
    s.start()
    _check_after_restart(s, refs, missing, before, counts)
    # kill -9 right after each single acknowledgement.
    cid = create_connector(s, completions_connector())
    s.kill9()
    s.start()
    assert get_doc(s, "connectors", cid)["name"] == "OpenAI Connector"
    reg = register_model(s, remote_model("k9", cid))
    s.kill9()
    s.start()
    assert get_doc(s, "models", reg["model_id"])["model_state"] == "REGISTERED"
    assert get_doc(s, "tasks", reg["task_id"])["state"] == "COMPLETED"
    assert get_doc(s, "model_groups", get_doc(s, "models", reg["model_id"])["model_group_id"])[
        "name"] == "k9"
    expect_write(s.put(ML + "/connectors/" + cid, {"name": "k9 renamed"}), "connectors", cid,
                 "updated")
    s.kill9()
    s.start()
    assert get_doc(s, "connectors", cid)["name"] == "k9 renamed"
    expect_write(s.delete(ML + "/models/" + reg["model_id"]), "models", reg["model_id"],
                 "deleted")
    s.kill9()
    s.start()
    assert s.get(ML + "/models/" + reg["model_id"]).status == 404
    gid = register_group(s, "k9 group")
    s.kill9()
    s.start()
    assert get_doc(s, "model_groups", gid)["name"] == "k9 group"
    # Ids stay unique across crashes: new documents never reuse old ids.
    cid2 = create_connector(s, completions_connector())
    assert cid2 != cid


# -- several nodes on one PostgreSQL database ------------------------------------------------------

def test_two_nodes_updating_one_document_lose_nothing(h):
    """Two nodes share a database and update different fields of one connector at the same time:
    each update reads the document and writes it back, so without a row lock a node would write
    back a copy that misses the other's change. Each node's last write must survive, and model
    registrations into one group from both nodes get distinct versions, and registrations that
    create a group by name from both nodes share one group."""
    pg_only()
    a = h.server(pg_db="mlrt_shared_nodes")
    b = h.server(pg_db="mlrt_shared_nodes")
    cid = create_connector(a, completions_connector())
    gid = register_group(a, "shared group")
    problems = []

    def update(s, field):
        for i in range(40):
            r = s.put(ML + "/connectors/" + cid, {field: "%s-%d" % (field, i)})
            if r.status != 200:
                problems.append(r)

    def register(s, tag):
        for i in range(10):
            r = s.post(ML + "/models/_register", {"name": "%s-%d" % (tag, i), "function_name":
                                                  "remote", "connector_id": cid,
                                                  "model_group_id": gid})
            if r.status != 200:
                problems.append(r)

    def register_by_name(s, _):
        """Both nodes register models named alike without a group: the first creates the group
        named after the model, the other must find it rather than clash on the name."""
        for i in range(10):
            r = s.post(ML + "/models/_register", {"name": "same-%d" % i, "function_name":
                                                  "remote", "connector_id": cid})
            if r.status != 200:
                problems.append(r)

    for target in (update, register, register_by_name):
        threads = [threading.Thread(target=target, args=(s, arg))
                   for s, arg in ((a, "name"), (b, "description"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not problems, problems[:3]
    doc = get_doc(b, "connectors", cid)
    assert (doc["name"], doc["description"]) == ("name-39", "description-39"), doc
    assert get_doc(a, "model_groups", gid)["latest_version"] == 20
    hits = search(a, "models", {"query": {"term": {"model_group_id": gid}}, "size": 100})
    versions = sorted(int(x["_source"]["model_version"]) for x in hits["hits"]["hits"])
    assert versions == list(range(1, 21)), hits
    for i in range(10):
        groups = search(a, "model_groups", {"query": {"term": {"name.keyword": "same-%d" % i}}})
        assert groups["hits"]["total"]["value"] == 1, groups
        models = search(a, "models", {"query": {"term": {"name.keyword": "same-%d" % i}}})
        assert sorted(x["_source"]["model_version"] for x in models["hits"]["hits"]) == \
            ["1", "2"], models

