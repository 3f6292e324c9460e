"""The predict engine, black-box (spec README §6, §9; mlcommons-reference.md §5, §5.6, §6.8, §7,
§11; clients.md §4 items 28-36; issue 5).

Every test starts the real binary and the mock provider of upstream.py on 127.0.0.1, trusts
http://127.0.0.1:* and allows private addresses, then creates connectors whose URL is
http://${parameters.endpoint}/<mock path>. Assertions look at both sides: what mlrelay answered
and what the mock received (method, path, lower-cased headers, body).
"""

import contextlib
import http.client
import json
import os
import re
import socket
import threading
import time

from upstream import Upstream

ML = "/_plugins/_ml"
SETTINGS = "/_cluster/settings"
TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"
PRIVATE_IP = "plugins.ml_commons.connector.private_ip_enabled"
AUTO_DEPLOY = "plugins.ml_commons.model_auto_deploy.enable"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "COMPLETED_WITH_ERROR")

CHAT_BODY = "{ \"model\": \"${parameters.model}\", \"messages\": ${parameters.messages} }"
COMPLETIONS_BODY = ("{ \"model\": \"${parameters.model}\", \"prompt\": \"${parameters.prompt}\", "
                    " \"max_tokens\": ${parameters.max_tokens},  \"temperature\": "
                    "${parameters.temperature} }")
COMPLETIONS_PARAMS = {"auth": "API_Key", "content_type": "application/json", "max_tokens": 7,
                      "temperature": 0, "model": "gpt-3.5-turbo-instruct"}
EMBED_BODY = "{ \"input\": ${parameters.input}, \"model\": \"${parameters.model}\" }"
SIGV4_AUTH = re.compile(r"^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/us-east-1/bedrock/"
                        r"aws4_request, SignedHeaders=.*, Signature=[0-9a-f]{64}$")


# -- setup helpers ------------------------------------------------------------------------------

def put_settings(s, persistent):
    r = s.put(SETTINGS, {"persistent": persistent})
    assert r.status == 200, (persistent, r)


@contextlib.contextmanager
def relay(h, args=()):
    """A server trusting the mock (private addresses allowed) and a running mock."""
    up = Upstream()
    try:
        s = h.server(args=args)
        put_settings(s, {TRUSTED: ["^http://127\\.0\\.0\\.1:.*$"], PRIVATE_IP: True})
        yield s, up
    finally:
        up.close()


def connector(up, path, body=CHAT_BODY, params=None, headers=None, credential=None,
              client_config=None, pre=None, post=None, protocol="http", method="POST"):
    """A connector body whose predict action calls the mock at @path."""
    p = {"endpoint": up.endpoint, "model": "gpt-3.5-turbo"}
    p.update(params or {})
    action = {"action_type": "predict", "method": method,
              "url": "http://${parameters.endpoint}/" + path.lstrip("/"),
              "headers": headers if headers is not None
              else {"Authorization": "Bearer ${credential.key}"}}
    if body is not None:
        action["request_body"] = body
    if pre:
        action["pre_process_function"] = pre
    if post:
        action["post_process_function"] = post
    c = {"name": "predict test connector", "description": "d", "version": 1,
         "protocol": protocol, "parameters": p,
         "credential": credential if credential is not None else {"key": "sk-test"},
         "actions": [action]}
    if client_config is not None:
        c["client_config"] = client_config
    return c


def create_connector(s, body):
    r = s.post(ML + "/connectors/_create", body)
    assert r.status == 200, r
    return r.json["connector_id"]


def wait_task(s, tid, timeout=5.0):
    deadline = time.time() + timeout
    doc = None
    while time.time() < deadline:
        r = s.get(ML + "/tasks/" + tid)
        if r.status == 200:
            doc = r.json
            if doc.get("state") in FINAL:
                break
        time.sleep(0.02)
    assert doc is not None and doc.get("state") == "COMPLETED", (tid, doc)
    return doc


def register(s, cid, **extra):
    """Registers a remote model on connector @cid, waits for its task; returns the model id."""
    body = {"name": "predict test model", "function_name": "remote", "description": "d",
            "connector_id": cid}
    body.update(extra)
    r = s.post(ML + "/models/_register", body)
    assert r.status == 200, r
    wait_task(s, r.json["task_id"])
    return r.json["model_id"]


def model_for(s, up, path, model_extra=None, **kw):
    """A connector to the mock's @path and a registered (not deployed) model on it."""
    return register(s, create_connector(s, connector(up, path, **kw)), **(model_extra or {}))


def deploy(s, mid):
    r = s.post(ML + "/models/%s/_deploy" % mid)
    assert r.status == 200, r
    wait_task(s, r.json["task_id"])
    assert get_model(s, mid)["model_state"] == "DEPLOYED"


def get_model(s, mid):
    r = s.get(ML + "/models/" + mid)
    assert r.status == 200, r
    return r.json


def predict(s, mid, params=None, body=None):
    return s.post(ML + "/models/%s/_predict" % mid,
                  body if body is not None else {"parameters": params or {}})


def predict_ok(s, mid, params=None, body=None):
    r = predict(s, mid, params, body)
    assert r.status == 200, r
    return r.json


def only_output(j):
    """The single tensor of a single inference result, checking status_code 200."""
    res = j["inference_results"]
    assert len(res) == 1, j
    assert res[0]["status_code"] == 200, j
    assert len(res[0]["output"]) == 1, j
    return res[0]["output"][0]


def expect_error(r, status, reason=None, prefix=None, etype=None):
    assert r.status == status, (status, reason or prefix, r)
    t, why = r.error()
    if reason is not None:
        assert why == reason, (reason, r)
    if prefix is not None:
        assert why.startswith(prefix), (prefix, r)
    if etype is not None:
        assert t == etype, (etype, r)
    return why


def deploy_tasks(s, mid):
    r = s.post(ML + "/tasks/_search", {"query": {"term": {"task_type": "DEPLOY_MODEL"}},
                                       "size": 1000})
    assert r.status == 200, r
    return [hit["_source"] for hit in r.json["hits"]["hits"]
            if hit["_source"].get("model_id") == mid]


def concurrent_posts(s, path, bodies, timeout=60):
    """POSTs every body of @bodies at once, each on its own connection. Returns
    ([(status, parsed JSON or raw text)], elapsed seconds)."""
    n = len(bodies)
    results = [None] * n
    barrier = threading.Barrier(n + 1)

    def run(i):
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=timeout)
        try:
            c.connect()
            barrier.wait()
            c.request("POST", path, body=json.dumps(bodies[i]),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            data = r.read()
            try:
                results[i] = (r.status, json.loads(data))
            except ValueError:
                results[i] = (r.status, data)
        except Exception as e:  # reported through results
            results[i] = (None, repr(e))
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.time()
    for t in threads:
        t.join(timeout + 5)
    return results, time.time() - t0


def close_enough(a, b):
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def check_embedding(tensor, expected):
    assert tensor["name"] == "sentence_embedding", tensor
    assert tensor["data_type"] == "FLOAT32", tensor
    assert tensor["shape"] == [len(expected)], tensor
    assert len(tensor["data"]) == len(expected), tensor
    assert all(close_enough(a, b) for a, b in zip(tensor["data"], expected)), (tensor, expected)


def closed_port():
    """A local TCP port nothing listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


# -- auto-deploy (reference §11) ---------------------------------------------------------------

def test_autodeploy_first_predict(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions")
        assert get_model(s, mid)["model_state"] == "REGISTERED"
        assert deploy_tasks(s, mid) == []
        j = predict_ok(s, mid, {"messages": [{"role": "user", "content": "hi"}]})
        assert only_output(j)["dataAsMap"]["choices"][0]["message"]["content"] == "echo: hi", j
        assert get_model(s, mid)["model_state"] == "DEPLOYED"
        tasks = deploy_tasks(s, mid)
        assert len(tasks) == 1, tasks
        assert tasks[0]["state"] == "COMPLETED", tasks
        assert up.count() == 1


def test_autodeploy_concurrent_first_predicts_share_one_deploy(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions")
        bodies = [{"parameters": {"messages": [{"role": "user", "content": "n%d" % i}]}}
                  for i in range(20)]
        results, _ = concurrent_posts(s, ML + "/models/%s/_predict" % mid, bodies)
        for i, (status, j) in enumerate(results):
            assert status == 200, (i, status, j)
            out = only_output(j)
            assert out["dataAsMap"]["choices"][0]["message"]["content"] == "echo: n%d" % i, j
        tasks = deploy_tasks(s, mid)
        assert len(tasks) == 1, tasks
        assert tasks[0]["state"] == "COMPLETED", tasks
        assert get_model(s, mid)["model_state"] == "DEPLOYED"
        assert up.count() == 20


def test_autodeploy_disabled_by_cluster_setting(h):
    with relay(h) as (s, up):
        put_settings(s, {AUTO_DEPLOY: False})
        mid = model_for(s, up, "v1/chat/completions")
        r = predict(s, mid, {"messages": []})
        expect_error(r, 400, "Model not ready yet. Please deploy the model first.")
        assert get_model(s, mid)["model_state"] == "REGISTERED"
        assert deploy_tasks(s, mid) == []
        assert up.count() == 0
        deploy(s, mid)  # an explicit deploy still serves predicts
        predict_ok(s, mid, {"messages": [{"role": "user", "content": "x"}]})


def test_autodeploy_disabled_for_model(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions",
                        model_extra={"deploy_setting": {"is_auto_deploy_enabled": False}})
        r = predict(s, mid, {"messages": []})
        expect_error(r, 400, "Auto deployment disabled for this model, please deploy model "
                             "first Model ID: " + mid)
        assert get_model(s, mid)["model_state"] == "REGISTERED"
        assert deploy_tasks(s, mid) == []
        assert up.count() == 0


def test_predict_unknown_model(h):
    with relay(h) as (s, up):
        r = predict(s, "aaaaaaaaaaaaaaaaaaaa", {"x": "y"})
        expect_error(r, 404, "Failed to find model")
        r = s.post(ML + "/_predict/text_embedding/aaaaaaaaaaaaaaaaaaaa", {"text_docs": ["a"]})
        expect_error(r, 404, "Failed to find model")
        assert up.count() == 0


def test_predict_disabled_model(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions", model_extra={"is_enabled": False})
        r = predict(s, mid, {"messages": []})
        expect_error(r, 403, "Model is disabled.")
        assert up.count() == 0
        # A deployed model disabled through the update API is refused too.
        mid2 = model_for(s, up, "v1/chat/completions")
        deploy(s, mid2)
        predict_ok(s, mid2, {"messages": [{"role": "user", "content": "x"}]})
        r = s.put(ML + "/models/" + mid2, {"is_enabled": False})
        assert r.status == 200, r
        expect_error(predict(s, mid2, {"messages": []}), 403, "Model is disabled.")
        assert up.count() == 1


def test_rate_limiter(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions",
                        model_extra={"rate_limiter": {"limit": "2", "unit": "MINUTES"}})
        params = {"messages": [{"role": "user", "content": "x"}]}
        predict_ok(s, mid, params)
        predict_ok(s, mid, params)
        expect_error(predict(s, mid, params), 429, "Request is throttled at model level.")
        assert up.count() == 2


def test_undeploy_then_predict_autodeploys_again(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions")
        deploy(s, mid)
        predict_ok(s, mid, {"messages": [{"role": "user", "content": "one"}]})
        r = s.post(ML + "/models/%s/_undeploy" % mid)
        assert r.status == 200 and "undeployed" in r.body.decode(), r
        assert get_model(s, mid)["model_state"] == "UNDEPLOYED"
        j = predict_ok(s, mid, {"messages": [{"role": "user", "content": "two"}]})
        assert only_output(j)["dataAsMap"]["choices"][0]["message"]["content"] == "echo: two"
        assert get_model(s, mid)["model_state"] == "DEPLOYED"
        assert len(deploy_tasks(s, mid)) == 2
        assert up.count() == 2


# -- rendering (reference §5) -----------------------------------------------------------------

def test_render_worked_example(h):
    with relay(h) as (s, up):
        body = ("{\"model\":\"${parameters.model}\",\"messages\":${parameters.messages},"
                "\"max_tokens\":${parameters.max_tokens}}")
        mid = model_for(s, up, "v1/chat/completions", body=body,
                        params={"model": "gpt-4o", "max_tokens": 100})
        predict_ok(s, mid, {"messages": [{"role": "user", "content": "Say \"hi\""}],
                            "model": "gpt-4o-mini"})
        rec = up.last()
        assert rec["method"] == "POST" and rec["path"] == "/v1/chat/completions", rec
        assert rec["body"] == ('{"model":"gpt-4o-mini","messages":[{"role":"user","content":'
                               '"Say \\"hi\\""}],"max_tokens":100}'), rec["body"]


def test_chat_connector_messages(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions")
        msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello!"}]
        j = predict_ok(s, mid, {"messages": msgs})
        rec = up.last()
        assert json.loads(rec["body"]) == {"model": "gpt-3.5-turbo", "messages": msgs}, rec
        expected = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-3.5-turbo",
                    "choices": [{"index": 0, "message": {"role": "assistant",
                                                         "content": "echo: Hello!"}}]}
        assert j == {"inference_results": [{"output": [{"name": "response",
                                                        "dataAsMap": expected}],
                                            "status_code": 200}]}, j


def test_completions_prompt_escaping(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/completions", body=COMPLETIONS_BODY,
                        params=COMPLETIONS_PARAMS)
        prompt = ("Say \"this\" is a test\nline two\ttab \\ backslash / slash \x01 "
                  "caf\u00e9 Mo\u00ebt \u65e5\u672c \U0001F600 ${not a placeholder")
        j = predict_ok(s, mid, {"prompt": prompt})
        sent = json.loads(up.last()["body"])  # valid JSON at the upstream
        assert sent == {"model": "gpt-3.5-turbo-instruct", "prompt": prompt, "max_tokens": 7,
                        "temperature": 0}, sent
        out = only_output(j)
        assert out["name"] == "response", out
        assert out["dataAsMap"] == {"id": "cmpl-1",
                                    "choices": [{"text": "This is indeed a test"}]}, out


def test_string_that_looks_like_json_is_escaped(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "echo", body="{\"prompt\": \"${parameters.prompt}\"}")
        for value in ("{\"a\": 1, \"b\": [true]}", "[1, 2, \"x\"]", "{\"x\":\"}\"}"):
            predict_ok(s, mid, {"prompt": value})
            sent = json.loads(up.last()["body"])
            assert sent == {"prompt": value}, (value, up.last()["body"])
        # Objects and arrays (by JSON type) go in verbatim.
        mid2 = model_for(s, up, "echo", body="{\"doc\": ${parameters.doc}}")
        predict_ok(s, mid2, {"doc": {"k": ["v", 1]}})
        assert json.loads(up.last()["body"]) == {"doc": {"k": ["v", 1]}}, up.last()


def test_request_parameters_override_connector(h):
    with relay(h) as (s, up):
        body = "{\"model\": \"${parameters.model}\", \"t\": ${parameters.temperature}}"
        mid = model_for(s, up, "echo", body=body,
                        params={"model": "connector-model", "temperature": 0.5})
        predict_ok(s, mid, {})
        assert json.loads(up.last()["body"]) == {"model": "connector-model", "t": 0.5}
        predict_ok(s, mid, {"model": "request-model", "temperature": 1.25})
        assert json.loads(up.last()["body"]) == {"model": "request-model", "t": 1.25}


def test_render_default_values(h):
    with relay(h) as (s, up):
        body = ("{\"a\": \"${parameters.x:-fallback}\", \"b\": \"${parameters.y:-fallback}\", "
                "\"n\": ${parameters.n:-3}}")
        mid = model_for(s, up, "echo", body=body)
        predict_ok(s, mid, {"y": "given"})
        assert json.loads(up.last()["body"]) == {"a": "fallback", "b": "given", "n": 3}, \
            up.last()["body"]


def test_render_quoted_null_default(h):
    with relay(h) as (s, up):
        body = "{\"a\": \"${parameters.x:-null}\", \"b\": \"${parameters.y:-null}\"}"
        mid = model_for(s, up, "echo", body=body)
        predict_ok(s, mid, {"y": "v"})
        assert json.loads(up.last()["body"]) == {"a": None, "b": "v"}, up.last()["body"]


def test_header_substitution(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "echo", body="{\"input\": \"${parameters.input}\"}",
                        params={"model": "test-model"},
                        credential={"test_api_key": "test"},
                        headers={"X-Custom-Request": "${parameters.request_id}",
                                 "X-Model": "${parameters.model}"})
        j = predict_ok(s, mid, {"request_id": "req-integration-test-12345",
                                "input": "test input"})
        echoed = only_output(j)["dataAsMap"]
        assert echoed["headers"]["x-custom-request"] == "req-integration-test-12345", echoed
        assert echoed["headers"]["x-model"] == "test-model", echoed
        assert json.loads(echoed["body"]) == {"input": "test input"}, echoed
        rec = up.last()
        assert rec["headers"]["x-custom-request"] == "req-integration-test-12345", rec
        assert rec["headers"]["x-model"] == "test-model", rec


def test_credential_header_and_default_content_type(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "echo", body="{\"input\": \"${parameters.input}\"}",
                        credential={"key": "sk-decrypted-value-42"})
        predict_ok(s, mid, {"input": "x"})
        rec = up.last()
        assert rec["headers"]["authorization"] == "Bearer sk-decrypted-value-42", rec
        assert rec["headers"]["content-type"] == "application/json", rec
        assert rec["headers"]["content-length"] == str(len(rec["body"].encode())), rec
        # A connector-set Content-Type wins over the default.
        mid2 = model_for(s, up, "echo", body="{\"input\": \"${parameters.input}\"}",
                         headers={"Content-Type": "application/x-custom+json"})
        predict_ok(s, mid2, {"input": "x"})
        assert up.last()["headers"]["content-type"] == "application/x-custom+json", up.last()


def test_leftover_placeholder(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/completions", body=COMPLETIONS_BODY,
                        params=COMPLETIONS_PARAMS)
        r = predict(s, mid, {"prompt": "Say this is a ${parameters.test}"})
        expect_error(r, 400, "Some parameter placeholder not filled in payload: test")
        assert up.count() == 0
        params = dict(COMPLETIONS_PARAMS, skip_validating_missing_parameters="false")
        mid2 = model_for(s, up, "v1/completions", body=COMPLETIONS_BODY, params=params)
        r = predict(s, mid2, {"prompt": "Say this is a ${parameters.test}"})
        expect_error(r, 400, "Some parameter placeholder not filled in payload: test")
        assert up.count() == 0


def test_leftover_placeholder_skip_validation(h):
    with relay(h) as (s, up):
        params = dict(COMPLETIONS_PARAMS, skip_validating_missing_parameters="true")
        mid = model_for(s, up, "v1/completions", body=COMPLETIONS_BODY, params=params)
        j = predict_ok(s, mid, {"prompt": "Say this is a ${parameters.test}"})
        assert only_output(j)["dataAsMap"]["choices"][0]["text"] == "This is indeed a test"
        assert json.loads(up.last()["body"])["prompt"] == "Say this is a ${parameters.test}", \
            up.last()


def test_invalid_rendered_payload(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "echo", body="{\"n\": ${parameters.n}}")
        r = predict(s, mid, {"n": "abc def"})
        expect_error(r, 400, prefix="Invalid payload: ")
        assert up.count() == 0


def test_untrusted_rendered_url(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "echo", body="{\"input\": \"${parameters.input}\"}")
        r = predict(s, mid, {"input": "x", "endpoint": "evil.example.com:80"})
        expect_error(r, 400, "Connector URL is not matching the trusted connector endpoint regex")
        assert up.count() == 0
        predict_ok(s, mid, {"input": "x"})
        assert up.count() == 1


def test_private_ip_refused(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "echo", body="{\"input\": \"${parameters.input}\"}")
        put_settings(s, {PRIVATE_IP: False})
        r = predict(s, mid, {"input": "x"})
        expect_error(r, 400, "Remote inference host name has private ip address: 127.0.0.1")
        assert up.count() == 0
        put_settings(s, {PRIVATE_IP: True})
        predict_ok(s, mid, {"input": "x"})
        assert up.count() == 1
        # Also refused when a kept-alive connection to that address exists.
        put_settings(s, {PRIVATE_IP: False})
        r = predict(s, mid, {"input": "x"})
        expect_error(r, 400, "Remote inference host name has private ip address: 127.0.0.1")
        assert up.count() == 1


# -- responses (reference §7.1, §5.6) ---------------------------------------------------------

def test_response_text_and_array(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "text", body="{\"a\": 1}")
        out = only_output(predict_ok(s, mid, {}))
        assert out == {"name": "response", "dataAsMap": {"response": "plain words"}}, out
        mid2 = model_for(s, up, "array", body="{\"a\": 1}")
        out = only_output(predict_ok(s, mid2, {}))
        assert out == {"name": "response", "dataAsMap": {"response": [1, 2, 3]}}, out


def test_response_filter(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions")
        j = predict_ok(s, mid, {"messages": [{"role": "user", "content": "hi"}],
                                "response_filter": "$.choices[0].message"})
        out = only_output(j)
        assert out == {"name": "response",
                       "dataAsMap": {"role": "assistant", "content": "echo: hi"}}, out


def test_openai_embedding_text_docs(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/embeddings", body=EMBED_BODY,
                        params={"model": "text-embedding-ada-002"},
                        pre="connector.pre_process.openai.embedding",
                        post="connector.post_process.openai.embedding")
        r = s.post(ML + "/_predict/text_embedding/" + mid, {"text_docs": ["a", "Mo\u00ebt"]})
        assert r.status == 200, r
        res = r.json["inference_results"]
        assert len(res) == 1 and res[0]["status_code"] == 200, r
        out = res[0]["output"]
        assert len(out) == 2, r
        check_embedding(out[0], [1.0, 0.5, -0.0043460787])
        check_embedding(out[1], [4.0, 0.5, -0.0043460787])  # "Moët" is 4 characters
        sent = json.loads(up.last()["body"])
        assert sent == {"input": ["a", "Mo\u00ebt"], "model": "text-embedding-ada-002"}, sent
        assert up.count() == 1


def test_openai_embedding_parameters_input(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/embeddings", body=EMBED_BODY,
                        params={"model": "text-embedding-ada-002"},
                        pre="connector.pre_process.openai.embedding",
                        post="connector.post_process.openai.embedding")
        text = "This is a string containing Mo\u00ebt Hennessy"
        j = predict_ok(s, mid, {"input": [text], "charset": "UTF-8"})
        res = j["inference_results"]
        assert res[0]["status_code"] == 200, j
        data = res[0]["output"][0]["data"]
        assert isinstance(data, list) and data, j
        assert all(isinstance(x, (int, float)) for x in data), j
        assert close_enough(data[0], float(len(text))), j
        assert json.loads(up.last()["body"])["input"] == [text], up.last()


def test_cohere_embedding(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "embed/cohere",
                        body="{ \"texts\": ${parameters.texts}, \"truncate\": \"END\" }",
                        pre="connector.pre_process.cohere.embedding",
                        post="connector.post_process.cohere.embedding")
        r = s.post(ML + "/_predict/text_embedding/" + mid, {"text_docs": ["ab", "xyz"]})
        assert r.status == 200, r
        out = r.json["inference_results"][0]["output"]
        assert len(out) == 2, r
        check_embedding(out[0], [2.0, 1.5])
        check_embedding(out[1], [3.0, 1.5])
        assert json.loads(up.last()["body"]) == {"texts": ["ab", "xyz"], "truncate": "END"}
        assert up.count() == 1


def test_bedrock_titan_embedding_one_request_per_doc(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "embed/titan", body="{ \"inputText\": \"${parameters.inputText}\" }",
                        pre="connector.pre_process.bedrock.embedding",
                        post="connector.post_process.bedrock.embedding")
        docs = ["a", "bb", "c\"c\u00e9"]
        r = s.post(ML + "/_predict/text_embedding/" + mid, {"text_docs": docs})
        assert r.status == 200, r
        assert up.count() == 3
        sent = sorted(json.loads(rec["body"])["inputText"] for rec in up.requests)
        assert sent == sorted(docs), up.requests
        res = r.json["inference_results"]
        assert len(res) == 3, r
        for doc, one in zip(docs, res):
            assert one["status_code"] == 200, r
            assert len(one["output"]) == 1, r
            check_embedding(one["output"][0], [float(len(doc)), 2.5])


def test_cohere_rerank(h):
    with relay(h) as (s, up):
        body = ("{ \"documents\": ${parameters.documents}, \"query\": \"${parameters.query}\", "
                "\"top_n\": ${parameters.top_n} }")
        mid = model_for(s, up, "rerank", body=body,
                        pre="connector.pre_process.cohere.rerank",
                        post="connector.post_process.cohere.rerank")
        r = s.post(ML + "/_predict/text_similarity/" + mid,
                   {"query_text": "q", "text_docs": ["a", "b", "c"]})
        assert r.status == 200, r
        sent = json.loads(up.last()["body"])
        assert sent == {"documents": ["a", "b", "c"], "query": "q", "top_n": 3}, sent
        res = r.json["inference_results"]
        assert len(res) == 1 and res[0]["status_code"] == 200, r
        out = res[0]["output"]
        assert len(out) == 3, r
        for i, t in enumerate(out):  # the mock gives doc i the score 1/(i+1), listed reversed
            assert t["name"] == "similarity", r
            assert t["data_type"] == "FLOAT32", r
            assert t["shape"] == [1], r
            assert len(t["data"]) == 1 and close_enough(t["data"][0], 1.0 / (i + 1)), (i, r)


# -- upstream errors (reference §7.2) ---------------------------------------------------------

def test_upstream_4xx_passthrough(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "status/400")
        r = predict(s, mid, {"messages": []})
        expect_error(r, 400, "Error from remote service: {\"message\": \"status 400\"}",
                     etype="status_exception")
        assert up.count() == 1


def test_upstream_503_passthrough(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "status/503", client_config={"max_retry_times": 0})
        r = predict(s, mid, {"messages": []})
        expect_error(r, 503, "Error from remote service: {\"message\": \"status 503\"}")
        assert up.count() == 1


def test_upstream_empty_bodies(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "empty/200")
        expect_error(predict(s, mid, {"messages": []}), 502,
                     "Remote service returned empty response body")
        mid2 = model_for(s, up, "empty/500")
        expect_error(predict(s, mid2, {"messages": []}), 500,
                     "Remote service returned error status 500 with empty body")


def test_connection_refused(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions",
                        params={"endpoint": "127.0.0.1:%d" % closed_port()})
        t0 = time.time()
        r = predict(s, mid, {"messages": []})
        expect_error(r, 500, prefix="Error communicating with remote model:")
        assert time.time() - t0 < 5, time.time() - t0


def test_read_timeout(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "slow/3000", client_config={"read_timeout": 1})
        deploy(s, mid)
        t0 = time.time()
        r = predict(s, mid, {"messages": []})
        elapsed = time.time() - t0
        expect_error(r, 500, prefix="Error communicating with remote model: ")
        assert 0.8 <= elapsed < 2.8, elapsed


# -- retries (client_config, reference §4.3) ---------------------------------------------------

def test_retry_until_success(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "flaky/2/503",
                        client_config={"max_retry_times": 3, "retry_backoff_millis": 50})
        j = predict_ok(s, mid, {"messages": []})
        assert only_output(j)["dataAsMap"] == {"ok": True, "attempt": 3}, j
        assert up.count() == 3


def test_retry_exhausted(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "flaky/2/503",
                        client_config={"max_retry_times": 1, "retry_backoff_millis": 50})
        r = predict(s, mid, {"messages": []})
        expect_error(r, 503, "Error from remote service: {\"message\": \"try again\"}")
        assert up.count() == 2


def test_4xx_never_retried(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "flaky/1/400",
                        client_config={"max_retry_times": 3, "retry_backoff_millis": 50})
        r = predict(s, mid, {"messages": []})
        expect_error(r, 400, "Error from remote service: {\"message\": \"try again\"}")
        assert up.count() == 1


def test_retry_after_honoured(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "retry-after/1",
                        client_config={"max_retry_times": 2, "retry_backoff_millis": 50})
        deploy(s, mid)
        t0 = time.time()
        j = predict_ok(s, mid, {"messages": []})
        elapsed = time.time() - t0
        assert only_output(j)["dataAsMap"] == {"ok": True, "attempt": 2}, j
        assert up.count() == 2
        assert 0.9 <= elapsed < 4, elapsed


def test_retry_timeout_bounds_total(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "status/503",
                        client_config={"max_retry_times": 100, "retry_backoff_millis": 200,
                                       "retry_timeout_seconds": 1})
        deploy(s, mid)
        t0 = time.time()
        r = predict(s, mid, {"messages": []})
        elapsed = time.time() - t0
        expect_error(r, 503, "Error from remote service: {\"message\": \"status 503\"}")
        assert elapsed < 3, elapsed
        assert 2 <= up.count() <= 8, up.count()


# -- max_connection and concurrency --------------------------------------------------------------

def test_max_connection_queues_excess_calls(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "inflight/300", client_config={"max_connection": 2})
        deploy(s, mid)
        bodies = [{"parameters": {"messages": [], "i": i}} for i in range(10)]
        results, elapsed = concurrent_posts(s, ML + "/models/%s/_predict" % mid, bodies)
        for i, (status, j) in enumerate(results):
            assert status == 200, (i, status, j)
        assert up.count() == 10
        assert up.max_inflight == 2, up.max_inflight
        assert 1.35 <= elapsed < 4.5, elapsed


def test_200_concurrent_predicts_overlap(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "slow/500", client_config={"max_connection": 200})
        deploy(s, mid)
        bodies = [{"parameters": {"messages": [], "i": i}} for i in range(200)]
        results, elapsed = concurrent_posts(s, ML + "/models/%s/_predict" % mid, bodies)
        bad = [(i, st, j) for i, (st, j) in enumerate(results) if st != 200]
        assert not bad, bad[:5]
        assert up.count() == 200
        assert elapsed < 5, elapsed


# -- aws_sigv4, hot reload, credential hygiene ------------------------------------------------

def test_aws_sigv4_signature(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "echo", body="{\"inputText\": \"${parameters.input}\"}",
                        protocol="aws_sigv4", headers={},
                        params={"region": "us-east-1", "service_name": "bedrock"},
                        credential={"access_key": "AKIDEXAMPLE", "secret_key": "s",
                                    "session_token": "tok"})
        predict_ok(s, mid, {"input": "hello"})
        hdrs = up.last()["headers"]
        assert SIGV4_AUTH.match(hdrs.get("authorization", "")), hdrs
        assert re.match(r"^\d{8}T\d{6}Z$", hdrs.get("x-amz-date", "")), hdrs
        assert hdrs.get("x-amz-security-token") == "tok", hdrs
        assert json.loads(up.last()["body"]) == {"inputText": "hello"}, up.last()


def test_connector_update_hot_reloads_credential(h):
    with relay(h) as (s, up):
        cid = create_connector(s, connector(up, "echo", body="{\"a\": \"${parameters.a}\"}",
                                            credential={"key": "old-secret"}))
        mid = register(s, cid)
        deploy(s, mid)
        predict_ok(s, mid, {"a": "1"})
        assert up.last()["headers"]["authorization"] == "Bearer old-secret", up.last()
        r = s.put(ML + "/connectors/" + cid, {"credential": {"key": "new-secret"}})
        assert r.status == 200, r
        predict_ok(s, mid, {"a": "2"})
        assert up.last()["headers"]["authorization"] == "Bearer new-secret", up.last()
        assert get_model(s, mid)["model_state"] == "DEPLOYED"


def test_credentials_never_leak(h):
    secret = "sk-planted-S3CRET-7f3a9c"
    s = None
    with relay(h, args=("--log-level", "debug")) as (s, up):
        cid = create_connector(s, connector(
            up, "v1/chat/completions", credential={"key": secret},
            headers={"Authorization": "Bearer ${credential.key}",
                     "X-Trace": "${credential.key}-${parameters.trace}"}))
        mid = register(s, cid)
        bodies = []
        r = predict(s, mid, {"messages": [{"role": "user", "content": "hi"}], "trace": "t1"})
        assert r.status == 200, r
        bodies.append(r.body)
        assert up.last()["headers"]["authorization"] == "Bearer " + secret, up.last()
        # Error paths: a header left unresolved, an upstream error.
        r = predict(s, mid, {"messages": []})
        expect_error(r, 400, "Header 'X-Trace' contains unresolved placeholder. Required "
                             "parameter is missing.")
        bodies.append(r.body)
        for path in ("/connectors/" + cid, "/models/" + mid):
            r = s.get(ML + path)
            assert r.status == 200, r
            bodies.append(r.body)
        r = s.post(ML + "/connectors/_search", {"query": {"match_all": {}}})
        assert r.status == 200, r
        bodies.append(r.body)
        r = s.put(ML + "/connectors/" + cid, {"credential": {"key": secret + "-2"}})
        assert r.status == 200, r
        bodies.append(r.body)
        for b in bodies:
            assert secret.encode() not in b, b
        time.sleep(0.2)
        assert secret not in s.log(), s.log()
    assert s.stop() == 0
    assert secret not in s.log(), s.log()
    for name in os.listdir(s.data_dir):
        path = os.path.join(s.data_dir, name)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                assert secret.encode() not in f.read(), path


# -- async predict (spec §7) -------------------------------------------------------------------

def wait_final(s, tid, timeout=5.0):
    """The task once it is in a final state (any), within @timeout seconds."""
    deadline = time.time() + timeout
    while True:
        r = s.get(ML + "/tasks/" + tid)
        assert r.status == 200, r
        if r.json.get("state") in FINAL:
            return r.json
        assert time.time() < deadline, r.json
        time.sleep(0.02)


def async_predict(s, mid, params):
    r = s.post(ML + "/models/%s/_predict?async=true" % mid, {"parameters": params})
    assert r.status == 200, r
    assert set(r.json) == {"task_id", "status"} and r.json["status"] == "CREATED", r
    return r.json["task_id"]


def test_async_predict_response_equals_sync(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions")
        params = {"messages": [{"role": "user", "content": "same \"answer\""}]}
        sync = predict_ok(s, mid, params)
        task = wait_task(s, async_predict(s, mid, params))
        assert task["state"] == "COMPLETED", task
        assert task["task_type"] == "PREDICTION" and task["is_async"] is True, task
        assert task["function_name"] == "REMOTE" and task["model_id"] == mid, task
        assert task["response"] == sync, (task, sync)
        assert "error" not in task, task


def test_async_predict_failure_carries_status(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "status/429")
        task = wait_final(s, async_predict(s, mid, {"messages": []}))
        assert task["state"] == "FAILED", task
        assert task["error"] == 'Error from remote service: {"message": "status 429"}', task
        assert task["response"] == {"status": 429}, task


def test_async_predict_unknown_model_fails_with_404(h):
    with relay(h) as (s, up):
        task = wait_final(s, async_predict(s, "nosuchmodel", {"messages": []}))
        assert task["state"] == "FAILED", task
        assert task["response"] == {"status": 404}, task
        assert task["error"] == "Failed to find model", task


def test_async_predicts_survive_kill9(h):  # slow
    """Acknowledged async predicts run after a crash: each task ends COMPLETED with a response."""
    with relay(h) as (s, up):
        mid = model_for(s, up, "slow/300")
        deploy(s, mid)
        tids = [async_predict(s, mid, {"messages": [{"role": "user", "content": str(i)}]})
                for i in range(30)]
        s.kill9()
        s.start()
        done = [wait_task(s, t, timeout=15) for t in tids]
        assert all(t["state"] == "COMPLETED" for t in done), done
        assert all(t["response"]["inference_results"][0]["status_code"] == 200 for t in done)


def test_sigterm_does_not_wait_for_retry_backoff(h):
    """A predict sleeping between retries must not hold up a graceful stop (exit 0 within 10 s)."""
    with relay(h) as (s, up):
        mid = model_for(s, up, "flaky/1000/503",
                        client_config={"max_retry_times": -1, "retry_backoff_millis": 30000,
                                       "retry_timeout_seconds": 120})
        deploy(s, mid)
        box = {}

        def call():
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
            try:
                c.request("POST", ML + "/models/%s/_predict" % mid,
                          body=json.dumps({"parameters": {"messages": []}}),
                          headers={"Content-Type": "application/json"})
                box["status"] = c.getresponse().status
            except (OSError, http.client.HTTPException) as e:
                box["error"] = repr(e)
            finally:
                c.close()

        t = threading.Thread(target=call, daemon=True)
        t.start()
        deadline = time.time() + 5
        while up.count() < 1 and time.time() < deadline:
            time.sleep(0.02)
        assert up.count() == 1, up.count()  # the first attempt failed; now it waits 30 s
        t0 = time.time()
        assert s.stop(timeout=10) == 0, s.log()
        assert time.time() - t0 < 10
        t.join(timeout=5)
        assert box.get("status") in (None, 500), box
        assert up.count() == 1, up.count()  # no retry was sent after the stop
