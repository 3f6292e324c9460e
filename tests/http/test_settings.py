"""GET/PUT /_cluster/settings (mlcommons-reference.md §2, spec README §3 settings row, and the
requests of clients.md §1 and §4 items 1-3)."""

import json
import time

from harness import read_responses

SETTINGS = "/_cluster/settings"
ML = "plugins.ml_commons."

# mlcommons-reference.md §2.2, in order.
DEFAULT_TRUSTED = [
    "^https://runtime\\.sagemaker\\..*[a-z0-9-]\\.amazonaws\\.com/.*$",
    "^https://api\\.sagemaker\\..*[a-z0-9-]\\.amazonaws\\.com/.*$",
    "^https://api\\.openai\\.com/.*$",
    "^https://api\\.cohere\\.ai/.*$",
    "^https://api\\.deepseek\\.com/.*$",
    "^https://generativelanguage\\.googleapis\\.com/.*$",
    "^https://bedrock-runtime\\..*[a-z0-9-]\\.amazonaws\\.com/.*$",
    "^https://bedrock-agent-runtime\\..*[a-z0-9-]\\.amazonaws\\.com/.*$",
    "^https://bedrock\\..*[a-z0-9-]\\.amazonaws\\.com/.*$",
    "^https://textract\\..*[a-z0-9-]\\.amazonaws\\.com$",
    "^https://comprehend\\..*[a-z0-9-]\\.amazonaws\\.com$",
    "^https://rekognition(-fips)?\\..*[a-z0-9-]\\.amazonaws\\.com$",
]


# -- helpers ------------------------------------------------------------------------------------

def put_ok(s, body, **kw):
    r = s.put(SETTINGS, body, **kw)
    assert r.status == 200, (body, r)
    assert r.json["acknowledged"] is True, r
    return r.json


def put_err(s, body, status=400):
    r = s.put(SETTINGS, body)
    assert r.status == status, (body, r)
    return r.error()


def get(s, query=""):
    r = s.get(SETTINGS + query)
    assert r.status == 200, r
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    return r.json


def flat(s, defaults=False):
    return get(s, "?flat_settings=true" + ("&include_defaults=true" if defaults else ""))


def nested_get(obj, dotted):
    """obj["a"]["b"]["c"] for "a.b.c"; KeyError when absent."""
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def snapshot(s):
    return get(s, "?flat_settings=true&include_defaults=true")


# -- shapes -------------------------------------------------------------------------------------

def test_fresh_get_is_empty(h):
    s = h.server()
    assert get(s) == {"persistent": {}, "transient": {}}
    assert flat(s) == {"persistent": {}, "transient": {}}


def test_flat_and_nested_put_equivalent(h):
    s = h.server()
    nested = {"persistent": {"plugins": {"ml_commons": {
        "model_auto_deploy": {"enable": False},
        "sync_up_job_interval_in_seconds": 3,
        "trusted_connector_endpoints_regex": ["^https://a\\.example/.*$"]}}},
        "transient": {"plugins": {"ml_commons": {"connector": {"private_ip_enabled": True}}}}}
    flatb = {"persistent": {ML + "model_auto_deploy.enable": False,
                            ML + "sync_up_job_interval_in_seconds": 3,
                            ML + "trusted_connector_endpoints_regex": ["^https://a\\.example/.*$"]},
             "transient": {ML + "connector.private_ip_enabled": True}}
    mixed = {"persistent": {"plugins.ml_commons": {"model_auto_deploy.enable": False},
                            "plugins": {"ml_commons.sync_up_job_interval_in_seconds": 3,
                                        "ml_commons": {"trusted_connector_endpoints_regex":
                                                       ["^https://a\\.example/.*$"]}}},
             "transient": {"plugins.ml_commons.connector": {"private_ip_enabled": True}}}
    reset = {"persistent": {ML + "model_auto_deploy.enable": None,
                            ML + "sync_up_job_interval_in_seconds": None,
                            ML + "trusted_connector_endpoints_regex": None},
             "transient": {ML + "connector.private_ip_enabled": None}}
    seen = []
    for body in (nested, flatb, mixed):
        echo = put_ok(s, body)
        seen.append((echo, get(s), flat(s)))
        put_ok(s, reset)
        assert flat(s) == {"persistent": {}, "transient": {}}
    assert seen[0] == seen[1] == seen[2], seen
    echo, nested_view, flat_view = seen[0]
    assert flat_view["persistent"] == {
        ML + "model_auto_deploy.enable": "false",
        ML + "sync_up_job_interval_in_seconds": "3",
        ML + "trusted_connector_endpoints_regex": ["^https://a\\.example/.*$"]}, flat_view
    assert flat_view["transient"] == {ML + "connector.private_ip_enabled": "true"}, flat_view
    assert nested_view == {
        "persistent": {"plugins": {"ml_commons": {
            "model_auto_deploy": {"enable": "false"},
            "sync_up_job_interval_in_seconds": "3",
            "trusted_connector_endpoints_regex": ["^https://a\\.example/.*$"]}}},
        "transient": {"plugins": {"ml_commons": {"connector": {"private_ip_enabled": "true"}}}},
    }, nested_view


def test_put_response_echoes_only_this_request(h):
    s = h.server()
    r1 = put_ok(s, {"persistent": {ML + "allow_custom_deployment_plan": True}})
    assert r1 == {"acknowledged": True,
                  "persistent": {"plugins": {"ml_commons": {
                      "allow_custom_deployment_plan": "true"}}},
                  "transient": {}}, r1
    r2 = put_ok(s, {"persistent": {ML + "safe_delete_model": True}})
    assert r2 == {"acknowledged": True,
                  "persistent": {"plugins": {"ml_commons": {"safe_delete_model": "true"}}},
                  "transient": {}}, r2
    r3 = put_ok(s, {"transient": {ML + "max_model_on_node": 5}})
    assert r3 == {"acknowledged": True, "persistent": {},
                  "transient": {"plugins": {"ml_commons": {"max_model_on_node": "5"}}}}, r3
    # flat_settings applies to the echo as well.
    r = s.put(SETTINGS + "?flat_settings=true", {"persistent": {ML + "max_model_on_node": 6}})
    assert r.status == 200, r
    assert r.json == {"acknowledged": True, "persistent": {ML + "max_model_on_node": "6"},
                      "transient": {}}, r
    # GET, unlike the echo, shows everything set so far.
    p = flat(s)
    assert p["persistent"] == {ML + "allow_custom_deployment_plan": "true",
                               ML + "safe_delete_model": "true",
                               ML + "max_model_on_node": "6"}, p
    assert p["transient"] == {ML + "max_model_on_node": "5"}, p


def test_values_become_strings(h):
    s = h.server()
    body = {"persistent": {
        ML + "model_auto_deploy.enable": False,
        ML + "remote_inference.enabled": "true",
        ML + "max_model_on_node": 3,
        ML + "ml_task_timeout_in_seconds": "45",
        ML + "model_auto_redeploy_success_ratio": 0.5,
        ML + "remote_job.status_field": ["status", "state"],
        ML + "trusted_connector_endpoints_regex": ["^https://x\\.example/.*$",
                                                   "^http://127\\.0\\.0\\.1:.*$"],
        ML + "my_future_list": [1, True, "x"],
        ML + "my_future_number": 42,
    }}
    want = {
        ML + "model_auto_deploy.enable": "false",
        ML + "remote_inference.enabled": "true",
        ML + "max_model_on_node": "3",
        ML + "ml_task_timeout_in_seconds": "45",
        ML + "model_auto_redeploy_success_ratio": "0.5",
        ML + "remote_job.status_field": ["status", "state"],
        ML + "trusted_connector_endpoints_regex": ["^https://x\\.example/.*$",
                                                   "^http://127\\.0\\.0\\.1:.*$"],
        ML + "my_future_list": ["1", "true", "x"],
        ML + "my_future_number": "42",
    }
    echo = put_ok(s, body)
    for k, v in want.items():
        assert nested_get(echo["persistent"], k) == v, (k, echo)
    assert flat(s)["persistent"] == want
    nested = get(s)
    for k, v in want.items():
        assert nested_get(nested["persistent"], k) == v, (k, nested)
    # The raw JSON really carries strings, not numbers or booleans.
    raw = s.get(SETTINGS + "?flat_settings=true").body.decode()
    assert '"plugins.ml_commons.max_model_on_node":"3"' in raw.replace(" ", ""), raw
    assert '"plugins.ml_commons.model_auto_deploy.enable":"false"' in raw.replace(" ", ""), raw


def test_null_resets(h):
    s = h.server()
    put_ok(s, {"persistent": {ML + "model_auto_deploy.enable": False,
                              ML + "max_model_on_node": 4,
                              ML + "custom_thing": "a"},
               "transient": {ML + "model_auto_deploy.enable": True}})
    # flat null
    put_ok(s, {"persistent": {ML + "max_model_on_node": None}})
    f = flat(s, defaults=True)
    assert ML + "max_model_on_node" not in f["persistent"], f
    assert f["defaults"][ML + "max_model_on_node"] == "10", f["defaults"]
    # nested null, for an unknown key too
    put_ok(s, {"persistent": {"plugins": {"ml_commons": {"custom_thing": None}}}})
    assert ML + "custom_thing" not in flat(s)["persistent"]
    # resetting the transient value leaves the persistent one
    put_ok(s, {"transient": {ML + "model_auto_deploy.enable": None}})
    f = flat(s)
    assert f["transient"] == {}, f
    assert f["persistent"] == {ML + "model_auto_deploy.enable": "false"}, f
    put_ok(s, {"persistent": {"plugins.ml_commons.model_auto_deploy.enable": None}})
    assert get(s) == {"persistent": {}, "transient": {}}
    # resetting a key that was never set is fine
    put_ok(s, {"persistent": {ML + "safe_delete_model": None}})
    assert get(s) == {"persistent": {}, "transient": {}}
    # a reset survives a restart
    put_ok(s, {"persistent": {ML + "safe_delete_model": True}})
    put_ok(s, {"persistent": {ML + "safe_delete_model": None}})
    assert s.stop() == 0
    s.start()
    assert get(s) == {"persistent": {}, "transient": {}}


def test_include_defaults(h):
    s = h.server()
    d = get(s, "?include_defaults=true")
    assert set(d) == {"persistent", "transient", "defaults"}, d.keys()
    ml = d["defaults"]["plugins"]["ml_commons"]
    assert ml["trusted_connector_endpoints_regex"] == DEFAULT_TRUSTED, ml
    assert ml["model_auto_deploy"]["enable"] == "true"
    assert ml["remote_inference"]["enabled"] == "true"
    assert ml["sync_up_job_interval_in_seconds"] == "10"
    assert ml["ml_task_timeout_in_seconds"] == "600"
    assert ml["connector_access_control_enabled"] == "false"
    assert ml["master_key_cache_ttl_minutes"] == "5"
    f = flat(s, defaults=True)["defaults"]
    assert f[ML + "trusted_connector_endpoints_regex"] == DEFAULT_TRUSTED
    assert f[ML + "connector.private_ip_enabled"] == "false"
    assert f[ML + "model_auto_redeploy_success_ratio"] in ("0.8", "0.80"), f
    assert f[ML + "task_dispatcher.eligible_node_role.remote_model"] == ["data", "ml"], f
    for v in f.values():
        assert isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
    # Without the flag there is no "defaults".
    assert "defaults" not in get(s) and "defaults" not in flat(s)
    # Keys that are set (persistent or transient) are not defaults.
    put_ok(s, {"persistent": {ML + "trusted_connector_endpoints_regex":
                              ["^https://q\\.example/.*$"]},
               "transient": {ML + "sync_up_job_interval_in_seconds": 3}})
    f2 = flat(s, defaults=True)
    assert ML + "trusted_connector_endpoints_regex" not in f2["defaults"], f2["defaults"]
    assert ML + "sync_up_job_interval_in_seconds" not in f2["defaults"], f2["defaults"]
    assert f2["defaults"][ML + "model_auto_deploy.enable"] == "true"
    assert f2["persistent"] == {ML + "trusted_connector_endpoints_regex":
                                ["^https://q\\.example/.*$"]}
    # After a reset the default is back.
    put_ok(s, {"persistent": {ML + "trusted_connector_endpoints_regex": None},
               "transient": {ML + "sync_up_job_interval_in_seconds": None}})
    f3 = flat(s, defaults=True)["defaults"]
    assert f3[ML + "trusted_connector_endpoints_regex"] == DEFAULT_TRUSTED
    assert f3[ML + "sync_up_job_interval_in_seconds"] == "10"


# -- layers and durability ----------------------------------------------------------------------

def test_transient_and_persistent_layers_across_restart(h):
    s = h.server()
    put_ok(s, {"persistent": {ML + "model_auto_deploy.enable": False,
                              ML + "max_model_on_node": 7},
               "transient": {ML + "model_auto_deploy.enable": True,
                             ML + "safe_delete_model": True}})
    f = flat(s, defaults=True)
    # Both layers are visible; the key set in either is no default.
    assert f["persistent"] == {ML + "model_auto_deploy.enable": "false",
                               ML + "max_model_on_node": "7"}, f
    assert f["transient"] == {ML + "model_auto_deploy.enable": "true",
                              ML + "safe_delete_model": "true"}, f
    assert ML + "model_auto_deploy.enable" not in f["defaults"]
    assert ML + "safe_delete_model" not in f["defaults"]
    # Graceful restart: transient is gone, persistent stays.
    assert s.stop() == 0
    s.start()
    f = flat(s, defaults=True)
    assert f["transient"] == {}, f
    assert f["persistent"] == {ML + "model_auto_deploy.enable": "false",
                               ML + "max_model_on_node": "7"}, f
    assert f["defaults"][ML + "safe_delete_model"] == "false", f["defaults"]


def test_persistent_survives_kill9_transient_does_not(h):  # slow
    s = h.server()
    put_ok(s, {"persistent": {ML + "sync_up_job_interval_in_seconds": 30,
                              ML + "trusted_connector_endpoints_regex":
                                  ["^https://k\\.example/.*$"]},
               "transient": {ML + "max_model_on_node": 9}})
    put_ok(s, {"persistent": {ML + "sync_up_job_interval_in_seconds": 31}})
    s.restart()  # kill -9, then start again
    f = flat(s)
    assert f["transient"] == {}, f
    assert f["persistent"] == {
        ML + "sync_up_job_interval_in_seconds": "31",
        ML + "trusted_connector_endpoints_regex": ["^https://k\\.example/.*$"]}, f


def test_unknown_ml_key_accepted(h):
    s = h.server()
    echo = put_ok(s, {"persistent": {ML + "brand_new.feature_flag": True,
                                     ML + "only_run_on_ml_node": False},
                      "transient": {"plugins": {"ml_commons": {"another_new_one": 12}}}})
    assert echo["persistent"]["plugins"]["ml_commons"]["brand_new"]["feature_flag"] == "true"
    assert echo["transient"]["plugins"]["ml_commons"]["another_new_one"] == "12"
    f = flat(s)
    assert f["persistent"] == {ML + "brand_new.feature_flag": "true",
                               ML + "only_run_on_ml_node": "false"}, f
    assert f["transient"] == {ML + "another_new_one": "12"}, f
    assert s.stop() == 0
    s.start()
    assert flat(s)["persistent"][ML + "brand_new.feature_flag"] == "true"


# -- rejected requests --------------------------------------------------------------------------

def test_unknown_non_ml_key_rejected(h):
    s = h.server()
    put_ok(s, {"persistent": {ML + "max_model_on_node": 2}})
    before = snapshot(s)
    t, reason = put_err(s, {"persistent": {"x.y": 1}})
    assert t == "illegal_argument_exception"
    assert reason == "persistent setting [x.y], not recognized", reason
    t, reason = put_err(s, {"transient": {"x": {"y": "1"}}})
    assert t == "illegal_argument_exception"
    assert reason == "transient setting [x.y], not recognized", reason
    # A valid key in the same request is not applied either.
    t, reason = put_err(s, {"persistent": {ML + "max_model_on_node": 8,
                                           "cluster.routing.allocation.enable": "all"}})
    assert "cluster.routing.allocation.enable" in reason and "not recognized" in reason, reason
    t, reason = put_err(s, {"persistent": {ML + "max_model_on_node": 8},
                            "transient": {"indices.foo": 1}})
    assert reason == "transient setting [indices.foo], not recognized", reason
    assert snapshot(s) == before


def test_int_type_errors(h):
    s = h.server()
    before = snapshot(s)
    key = ML + "sync_up_job_interval_in_seconds"
    t, reason = put_err(s, {"persistent": {key: 100000}})
    assert t == "illegal_argument_exception"
    assert "must be <= 86400" in reason and key in reason and "100000" in reason, reason
    t, reason = put_err(s, {"transient": {key: "100000"}})
    assert "must be <= 86400" in reason and key in reason, reason
    key2 = ML + "ml_task_timeout_in_seconds"
    t, reason = put_err(s, {"persistent": {key2: 0}})
    assert "must be >= 1" in reason and key2 in reason, reason
    t, reason = put_err(s, {"persistent": {key2: "soon"}})
    assert key2 in reason and "soon" in reason, reason
    t, reason = put_err(s, {"persistent": {key2: 1.5}})
    assert key2 in reason and "1.5" in reason, reason
    key3 = ML + "model_auto_redeploy_success_ratio"
    t, reason = put_err(s, {"persistent": {key3: 1.5}})
    assert key3 in reason and "1.5" in reason and "must be <=" in reason, reason
    # A list where a scalar is expected.
    t, reason = put_err(s, {"persistent": {key: [1, 2]}})
    assert key in reason, reason
    assert snapshot(s) == before
    # Boundaries are accepted.
    put_ok(s, {"persistent": {key: 86400, key2: 1, key3: 1}})
    f = flat(s)["persistent"]
    assert f[key] == "86400" and f[key2] == "1", f


def test_bool_type_error_names_key_and_value(h):
    s = h.server()
    before = snapshot(s)
    key = ML + "model_auto_deploy.enable"
    for section in ("persistent", "transient"):
        t, reason = put_err(s, {section: {key: "maybe"}})
        assert t == "illegal_argument_exception"
        assert "maybe" in reason, reason
        assert key in reason, "reason must name the key: %r" % reason
    t, reason = put_err(s, {"persistent": {key: 1}})
    assert key in reason and "1" in reason, reason
    assert snapshot(s) == before


def test_invalid_regex_changes_nothing(h):  # slow
    s = h.server()
    trusted = ML + "trusted_connector_endpoints_regex"
    put_ok(s, {"persistent": {ML + "model_auto_deploy.enable": False,
                              trusted: ["^https://a\\.example/.*$"]},
               "transient": {ML + "sync_up_job_interval_in_seconds": 5}})
    before = snapshot(s)
    t, reason = put_err(s, {
        "persistent": {ML + "model_auto_deploy.enable": True,
                       ML + "remote_inference.enabled": False,
                       trusted: ["^https://ok\\.example/.*$", "(unclosed"]},
        "transient": {ML + "sync_up_job_interval_in_seconds": 7,
                      ML + "safe_delete_model": True}})
    assert t == "illegal_argument_exception"
    assert "(unclosed" in reason and trusted in reason, reason
    assert snapshot(s) == before
    # Bad regex in the transient section while the persistent part is valid.
    t, reason = put_err(s, {"persistent": {ML + "model_auto_deploy.enable": True},
                            "transient": {trusted: ["(unclosed"]}})
    assert "(unclosed" in reason, reason
    assert snapshot(s) == before
    # Nothing reached the database either.
    s.restart()
    f = flat(s)
    assert f["persistent"] == {ML + "model_auto_deploy.enable": "false",
                               trusted: ["^https://a\\.example/.*$"]}, f
    assert f["transient"] == {}, f


def test_regex_rules(h):
    s = h.server()
    trusted = ML + "trusted_connector_endpoints_regex"
    before = snapshot(s)
    for bad in ("(a+)+", "^https://(x*)*$", "(a)\\1", "[z-a]", "x" * 257):
        t, reason = put_err(s, {"persistent": {trusted: ["^https://fine\\.example/.*$", bad]}})
        assert t == "illegal_argument_exception", (bad, t)
        assert trusted in reason, (bad, reason)
    # A single status regex is checked the same way.
    t, reason = put_err(s, {"persistent": {ML + "remote_job.status_regex.failed": "(failed"}})
    assert ML + "remote_job.status_regex.failed" in reason, reason
    assert snapshot(s) == before
    ok = ["^https://fine\\.example/.*$", "^https://(a|b)+\\.example/v[0-9]{1,3}/.*$", "x" * 256]
    put_ok(s, {"persistent": {trusted: ok}})
    assert flat(s)["persistent"][trusted] == ok
    # An empty list is allowed (it allows nothing) and is not the default.
    put_ok(s, {"persistent": {trusted: []}})
    f = flat(s, defaults=True)
    assert f["persistent"][trusted] == [], f
    assert trusted not in f["defaults"]


def test_static_key_rejected(h):
    s = h.server()
    before = snapshot(s)
    key = ML + "master_key_cache_ttl_minutes"
    for section in ("persistent", "transient"):
        t, reason = put_err(s, {section: {key: 10}})
        assert t == "illegal_argument_exception", t
        assert key in reason, reason
    t, reason = put_err(s, {"persistent": {key: 10, ML + "max_model_on_node": 3}})
    assert key in reason, reason
    assert snapshot(s) == before


def test_bad_bodies(h):
    s = h.server()
    before = snapshot(s)
    # unknown top-level field
    r = s.put(SETTINGS, {"persistent": {ML + "max_model_on_node": 3}, "permanent": {}})
    assert r.status == 400, r
    assert "permanent" in r.error()[1], r
    # empty body
    r = s.put(SETTINGS, b"", headers={"Content-Type": "application/json"})
    assert r.status == 400, r
    r.error()
    r = s.request("PUT", SETTINGS)
    assert r.status == 400, r
    r.error()
    # not JSON / not an object
    for raw in (b"{", b"[1,2]", b"\"persistent\"", b"{\"persistent\": 5}",
                b"{\"persistent\": [1]}", b"{\"persistent\": {\"plugins.ml_commons.a\": {}} x}"):
        r = s.put(SETTINGS, raw)
        assert r.status == 400, (raw, r)
        r.error()
    assert snapshot(s) == before


# -- config file --------------------------------------------------------------------------------

def test_config_file_initial_values(h):
    cfg = {ML + "model_auto_deploy.enable": False,
           ML + "trusted_connector_endpoints_regex": ["^https://cfg\\.example/.*$"]}
    s = h.server(config=cfg)
    f = flat(s, defaults=True)
    assert f["persistent"] == {} and f["transient"] == {}, f
    d = f["defaults"]
    assert d[ML + "model_auto_deploy.enable"] == "false", d
    assert d[ML + "trusted_connector_endpoints_regex"] == ["^https://cfg\\.example/.*$"], d
    assert get(s, "?include_defaults=true")["defaults"]["plugins"]["ml_commons"][
        "model_auto_deploy"]["enable"] == "false"
    # A persistent PUT overrides the config file value.
    put_ok(s, {"persistent": {ML + "model_auto_deploy.enable": True}})
    f = flat(s, defaults=True)
    assert f["persistent"][ML + "model_auto_deploy.enable"] == "true", f
    assert ML + "model_auto_deploy.enable" not in f["defaults"], f["defaults"]
    # ...also after a restart with the same config file.
    assert s.stop() == 0
    s.start()
    f = flat(s, defaults=True)
    assert f["persistent"][ML + "model_auto_deploy.enable"] == "true", f
    # Resetting falls back to the config file, not to the built-in default.
    put_ok(s, {"persistent": {ML + "model_auto_deploy.enable": None}})
    f = flat(s, defaults=True)
    assert ML + "model_auto_deploy.enable" not in f["persistent"]
    assert f["defaults"][ML + "model_auto_deploy.enable"] == "false", f["defaults"]


def test_config_file_sets_static_key(h):
    """Static settings cannot be PUT, so the config file is the only way to set them."""
    key = ML + "master_key_cache_ttl_minutes"
    s = h.server(config={key: 30})
    f = flat(s, defaults=True)
    assert f["defaults"][key] == "30", f["defaults"]
    assert f["persistent"] == {}, f
    t, reason = put_err(s, {"persistent": {key: 10}})
    assert key in reason, reason
    assert flat(s, defaults=True)["defaults"][key] == "30"


def test_config_file_cluster_value_out_of_range(h):
    key = ML + "max_model_on_node"
    s = h.server(config={key: 20000}, start=False)
    s.start(wait=False)
    assert s.wait_exit(10) == 2, s.log()
    assert key in s.log() and "20000" in s.log(), s.log()


# -- what real clients send ---------------------------------------------------------------------

def test_mlcommons_it_sequence(h):
    """clients.md §4 items 1-3, with an empty User-Agent like the ML Commons ITs."""
    s = h.server()
    ua = {"User-Agent": ""}
    for body in ({"persistent": {ML + "only_run_on_ml_node": False}},
                 {"persistent": {ML + "allow_registering_model_via_url": True}},
                 {"persistent": {ML + "allow_registering_model_via_local_file": True}},
                 {"persistent": {ML + "jvm_heap_memory_threshold": 100,
                                 ML + "native_memory_threshold": 100,
                                 ML + "disk_free_space_threshold": 0}}):
        r = s.put(SETTINGS, body, headers=ua)
        assert r.status == 200, (body, r)
        assert r.json["acknowledged"] is True
    r = s.put(SETTINGS, {"persistent": {ML + "connector_access_control_enabled": False,
                                        ML + "sync_up_job_interval_in_seconds": 3}}, headers=ua)
    assert r.status == 200, r
    deadline = time.time() + 5
    while True:
        r = s.get(SETTINGS + "?flat_settings=true", headers=ua)
        assert r.status == 200, r
        v = r.json["persistent"].get(ML + "connector_access_control_enabled")
        if v == "false" or time.time() > deadline:
            break
        time.sleep(0.1)
    assert v == "false", r
    p = r.json["persistent"]
    assert p[ML + "sync_up_job_interval_in_seconds"] == "3", p
    assert p[ML + "only_run_on_ml_node"] == "false", p
    assert p[ML + "allow_registering_model_via_url"] == "true", p
    assert p[ML + "jvm_heap_memory_threshold"] == "100", p
    assert p[ML + "disk_free_space_threshold"] == "0", p
    # item 3
    r = s.put(SETTINGS, {"persistent": {ML + "trusted_connector_endpoints_regex":
                                        ["^http://127\\.0\\.0\\.1:.*$"]}}, headers=ua)
    assert r.status == 200, r
    r = s.put(SETTINGS, {"persistent": {ML + "connector.private_ip_enabled": True}}, headers=ua)
    assert r.status == 200, r
    p = flat(s)["persistent"]
    assert p[ML + "trusted_connector_endpoints_regex"] == ["^http://127\\.0\\.0\\.1:.*$"], p
    assert p[ML + "connector.private_ip_enabled"] == "true", p
    for key in ("trusted_connector_endpoints_regex", "connector.private_ip_enabled"):
        r = s.put(SETTINGS, {"persistent": {ML + key: None}}, headers=ua)
        assert r.status == 200, r
    f = flat(s, defaults=True)
    assert ML + "trusted_connector_endpoints_regex" not in f["persistent"], f
    assert ML + "connector.private_ip_enabled" not in f["persistent"], f
    assert f["defaults"][ML + "trusted_connector_endpoints_regex"] == DEFAULT_TRUSTED
    assert f["defaults"][ML + "connector.private_ip_enabled"] == "false"


def test_js_client_put_settings(h):
    """The exact PUT and follow-up GET the JS client 3.9.0 sends (clients.md §1)."""
    s = h.server()
    body = (b'{"persistent":{"plugins.ml_commons.trusted_connector_endpoints_regex":'
            b'["^http://127\\\\.0\\\\.0\\\\.1:.*$"],'
            b'"plugins.ml_commons.only_run_on_ml_node":false}}')
    assert len(body) == 150
    ua = b"opensearch-js/3.9.0 (linux 6.1.0-x64; Node.js v20.20.2)"
    req1 = (b"PUT /_cluster/settings HTTP/1.1\r\nuser-agent: " + ua +
            b"\r\ncontent-type: application/json\r\ncontent-length: 150\r\n"
            b"Host: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n" + body)
    req2 = (b"GET /_cluster/settings?flat_settings=true HTTP/1.1\r\nuser-agent: " + ua +
            b"\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
    sock = s.socket()
    try:
        sock.sendall(req1)
        (st1, hd1, b1), = read_responses(sock, 1)
        sock.sendall(req2)
        (st2, hd2, b2), = read_responses(sock, 1)
    finally:
        sock.close()
    assert st1 == 200, b1
    assert hd1["content-type"].startswith("application/json"), hd1
    assert json.loads(b1) == {
        "acknowledged": True,
        "persistent": {"plugins": {"ml_commons": {
            "trusted_connector_endpoints_regex": ["^http://127\\.0\\.0\\.1:.*$"],
            "only_run_on_ml_node": "false"}}},
        "transient": {}}, b1
    assert st2 == 200, b2
    assert hd2["content-type"].startswith("application/json"), hd2
    assert json.loads(b2) == {
        "persistent": {ML + "trusted_connector_endpoints_regex": ["^http://127\\.0\\.0\\.1:.*$"],
                       ML + "only_run_on_ml_node": "false"},
        "transient": {}}, b2


def test_access_control_cannot_be_enabled_without_users(h):
    """Spec §8: with no users configured, the access-control settings refuse to turn on, with
    ML Commons' "Security plugin" wording, and nothing changes; false is accepted."""
    s = h.server()
    cases = {
        ML + "model_access_control_enabled":
            "You cannot specify model access control parameters because the Security plugin or "
            "model access control is disabled on your cluster.",
        ML + "connector_access_control_enabled":
            "You cannot specify connector access control parameters because the Security plugin "
            "or connector access control is disabled on your cluster.",
    }
    for key, reason in cases.items():
        for scope in ("persistent", "transient"):
            r = s.put(SETTINGS, {scope: {key: True, ML + "sync_up_job_interval_in_seconds": 7}})
            assert r.status == 400, r
            assert r.error() == ("illegal_argument_exception", reason), r
        r = s.put(SETTINGS, {"persistent": {key: False}})
        assert r.status == 200, r
    got = s.get(SETTINGS + "?flat_settings=true").json
    assert ML + "sync_up_job_interval_in_seconds" not in got["persistent"], got
    assert ML + "sync_up_job_interval_in_seconds" not in got["transient"], got


def test_config_file_cannot_enable_access_control(h):
    s = h.server(config={ML + "model_access_control_enabled": True}, start=False)
    s.start(wait=False)
    assert s.wait_exit(10) == 2, s.log()
    assert "model_access_control_enabled" in s.log() and "no users" in s.log(), s.log()
