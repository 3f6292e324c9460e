"""Observability, black-box (spec README §3 observability row, §7 `/metrics`; mlcommons-reference.md
§14 and §2.2 monitoring_request_count; issue 9 points 1 and 2).

`GET /metrics` is scraped before and after known traffic against the mock provider and the
counters must move by exactly the expected amounts; every scrape must parse under a strict
reading of the Prometheus text exposition format (parse_exposition below). The ML Commons stats
and profile APIs are checked for their shapes and counts.
"""

import math
import re
import time

from harness import read_responses
from test_predict import ML, SETTINGS, deploy, model_for, predict, predict_ok, relay

PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREDICT_ROUTE = "/_plugins/_ml/models/{id}/_predict"
REGISTER_ROUTE = "/_plugins/_ml/models/_register"
MESSAGES = {"messages": [{"role": "user", "content": "hi"}]}

# -- a strict reader of the text exposition format ----------------------------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE = re.compile(r"^(%s)(?:\{(.*)\})? (\S+)$" % NAME)
LABEL = re.compile(r'(%s)="((?:[^"\\\n]|\\[\\"n])*)"' % LABEL_NAME)
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_value(text, line):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    assert re.match(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$", text), ("bad value", line)
    return float(text)


def parse_labels(text, line):
    """'a="x",b="y"' -> (("a","x"),("b","y")), refusing anything the format does not allow."""
    out, pos = [], 0
    while pos < len(text):
        m = LABEL.match(text, pos)
        assert m, ("bad label syntax", line)
        value = re.sub(r"\\(.)", lambda g: {"n": "\n"}.get(g.group(1), g.group(1)), m.group(2))
        out.append((m.group(1), value))
        pos = m.end()
        if pos < len(text):
            assert text[pos] == ",", ("bad label separator", line)
            pos += 1
            assert pos < len(text), ("trailing comma", line)
    names = [k for k, _ in out]
    assert len(names) == len(set(names)), ("duplicate label", line)
    return tuple(out)


def family_of(name, types):
    """The declared family a sample name belongs to (histograms: _bucket, _sum, _count)."""
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    raise AssertionError("sample %s has no # TYPE line before it" % name)


def check_histograms(samples, types):
    for fam, t in types.items():
        if t != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                le = dict(labels)["le"]
                rest = tuple(kv for kv in labels if kv[0] != "le")
                series.setdefault(rest, []).append((float(le.replace("Inf", "inf")), v))
        for rest, buckets in series.items():
            bounds = [b for b, _ in buckets]
            assert bounds == sorted(bounds) and bounds[-1] == math.inf, (fam, rest, bounds)
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), ("buckets not cumulative", fam, rest, counts)
            assert samples[(fam + "_count", rest)] == counts[-1], (fam, rest)
            assert (fam + "_sum", rest) in samples, (fam, rest)
        for (name, labels) in samples:
            if name in (fam + "_sum", fam + "_count"):
                assert labels in series, ("_sum/_count without buckets", fam, labels)


def parse_exposition(text):
    """Parses a whole scrape strictly; returns {(name, labels tuple): value}."""
    assert text.endswith("\n"), "the text must end with a newline"
    types, helps, samples, done, current = {}, {}, {}, set(), None
    for line in text[:-1].split("\n"):
        assert line != "", "blank line"
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) (%s) (.+)$" % NAME, line)
            assert m, ("bad comment line", line)
            kind, name, rest = m.groups()
            if kind == "HELP":
                assert name not in helps, ("second HELP", line)
                helps[name] = rest
            else:
                assert rest in TYPES and name not in types, ("bad or second TYPE", line)
                assert helps.get(name) is not None, ("TYPE without HELP first", line)
                types[name] = rest
            if name != current:
                assert name not in done, ("family split", line)
                if current:
                    done.add(current)
                current = name
            continue
        m = SAMPLE.match(line)
        assert m, ("bad sample line", line)
        name, labels, value = m.group(1), parse_labels(m.group(2) or "", line), m.group(3)
        fam = family_of(name, types)
        assert fam == current, ("sample outside its family's block", line)
        key = (name, labels)
        assert key not in samples, ("duplicate series", line)
        samples[key] = parse_value(value, line)
        if types[fam] == "counter":
            assert name.endswith("_total") and samples[key] >= 0, ("bad counter", line)
        assert name.startswith("mlrelay_"), ("missing prefix", line)
    check_histograms(samples, types)
    return samples


def scrape(s):
    r = s.get("/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"] == PROM_TYPE, r.headers
    return parse_exposition(r.body.decode())


def scrape_until(s, before, name, want, **labels):
    """Scrapes until counter @name moved by @want since @before (a task's outcome is counted
    when its commit reaches the loop, which may be just after a reader saw the task final)."""
    for _ in range(100):
        after = scrape(s)
        if delta(before, after, name, **labels) >= want:
            return after
        time.sleep(0.02)
    raise AssertionError("%s%r did not move by %d" % (name, labels, want))


def value(samples, name, **labels):
    """A sample's value; 0 when the series does not exist (yet)."""
    want = set(labels.items())
    for (n, lab), v in samples.items():
        if n == name and set(lab) == want:
            return v
    return 0


def delta(before, after, name, **labels):
    return value(after, name, **labels) - value(before, name, **labels)


def node_of(s):
    r = s.get(ML + "/stats")
    assert r.status == 200 and len(r.json["nodes"]) == 1, r
    return next(iter(r.json["nodes"]))


# -- /metrics ------------------------------------------------------------------------------------

def test_metrics_counters_move_by_exactly_the_traffic(h):
    n = 5
    with relay(h) as (s, up):
        ok = model_for(s, up, "v1/chat/completions")
        bad = model_for(s, up, "status/400")
        flaky = model_for(s, up, "flaky/1/503",
                          client_config={"max_retry_times": 1, "retry_backoff_millis": 20})
        for mid in (ok, bad, flaky):
            deploy(s, mid)
        before = scrape(s)

        for _ in range(n):
            predict_ok(s, ok, MESSAGES)
        r = predict(s, bad, MESSAGES)
        assert r.status == 400, r
        predict_ok(s, flaky, MESSAGES)  # one 503, one retry, then 200
        assert s.get("/no/such/path").status == 400
        model_for(s, up, "v1/chat/completions")  # a connector, a register and its task
        after = scrape_until(s, before, "mlrelay_tasks_finished_total", 1,
                             type="REGISTER_MODEL", state="COMPLETED")

        d = lambda name, **kw: delta(before, after, name, **kw)  # noqa: E731
        req = "mlrelay_http_requests_total"
        assert d(req, route=PREDICT_ROUTE, method="POST", code="200") == n + 1
        assert d(req, route=PREDICT_ROUTE, method="POST", code="400") == 1
        assert d(req, route="unmatched", method="GET", code="400") == 1
        assert d(req, route=REGISTER_ROUTE, method="POST", code="200") == 1
        assert d(req, route="/metrics", method="GET", code="200") >= 1  # the earlier scrapes
        assert d("mlrelay_http_request_duration_seconds_count", route=PREDICT_ROUTE) == n + 2

        up_req = "mlrelay_upstream_requests_total"
        assert d(up_req, model=ok, **{"class": "ok"}) == n
        assert d(up_req, model=bad, **{"class": "status"}) == 1
        assert d(up_req, model=bad, **{"class": "ok"}) == 0
        assert d(up_req, model=flaky, **{"class": "status"}) == 1
        assert d(up_req, model=flaky, **{"class": "ok"}) == 1
        assert d("mlrelay_upstream_retries_total", model=flaky) == 1
        assert d("mlrelay_upstream_retries_total", model=ok) == 0
        assert d("mlrelay_upstream_request_duration_seconds_count", model=ok) == n
        assert d("mlrelay_upstream_request_duration_seconds_count", model=flaky) == 2
        assert value(after, "mlrelay_upstream_inflight") == 0

        assert d("mlrelay_ml_requests_total", action="predict") == n + 2
        assert d("mlrelay_ml_failures_total", action="predict") == 1
        assert d("mlrelay_ml_requests_total", action="register") == 1
        assert d("mlrelay_ml_failures_total", action="register") == 0
        assert d("mlrelay_tasks_claimed_total", type="REGISTER_MODEL") == 1
        assert d("mlrelay_tasks_finished_total", type="REGISTER_MODEL", state="COMPLETED") == 1
        assert d("mlrelay_task_queue_wait_seconds_count") == 1
        assert value(after, "mlrelay_tasks_running", type="REGISTER_MODEL") == 0
        assert value(after, "mlrelay_deployed_models") == 3
        assert d("mlrelay_store_commits_total") >= 2  # the connector and the register at least
        assert d("mlrelay_store_commit_seconds_count") == d("mlrelay_store_commits_total")
        assert value(after, "mlrelay_http_open_connections") >= 1
        assert value(after, "mlrelay_process_resident_memory_bytes") > 1 << 20
        assert value(after, "mlrelay_process_open_fds") > 3


def test_metrics_labels_are_patterns_and_deployed_models_only(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions")
        deploy(s, mid)
        predict_ok(s, mid, MESSAGES)
        r = s.post(ML + "/models/%s/_undeploy" % mid)
        assert r.status == 200, r
        s.get(ML + "/tasks/" + "x" * 20)  # a raw id in the path
        text = s.get("/metrics").body.decode()
        samples = parse_exposition(text)
        assert "x" * 20 not in text  # routes are labelled by pattern, never by path
        assert mid not in text  # undeployed: its upstream series are gone
        assert value(samples, "mlrelay_deployed_models") == 0
        assert value(samples, "mlrelay_http_requests_total", route="/_plugins/_ml/tasks/{id}",
                     method="GET", code="404") == 1


def test_metrics_head_and_wrong_method(h):
    s = h.server()
    r = s.request("HEAD", "/metrics")
    assert r.status == 200 and r.body == b"", r
    assert r.headers["content-type"] == PROM_TYPE
    r = s.post("/metrics", {})
    assert r.status == 405, r
    # A connection-level refusal (413 before the body is read) counts under its route.
    sock = s.socket()
    sock.sendall(b"POST /_plugins/_ml/models/abc/_predict HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n")
    assert read_responses(sock, 1)[0][0] == 413
    sock.close()
    samples = scrape(s)
    assert value(samples, "mlrelay_http_requests_total", route=PREDICT_ROUTE, method="POST",
                 code="413") == 1
    assert value(samples, "mlrelay_http_requests_total", route="/metrics", method="HEAD",
                 code="200") == 1
    assert value(samples, "mlrelay_http_requests_total", route="unmatched", method="POST",
                 code="405") == 1


# -- ML Commons stats ------------------------------------------------------------------------------

def test_stats_shape_and_counts(h):
    n = 4
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions")
        deploy(s, mid)
        for _ in range(n):
            predict_ok(s, mid, MESSAGES)
        r = s.get(ML + "/stats")
        assert r.status == 200, r
        j = r.json
        assert j["ml_model_count"] == 1 and j["ml_connector_count"] == 1, j
        for idx in ("model", "connector", "config", "task"):
            assert j["ml_%s_index_status" % idx] == "green", j
        assert j["ml_controller_index_status"] == "non-existent", j
        node = node_of(s)
        ns = j["nodes"][node]
        # register + deploy + n predicts, none failed
        assert ns["ml_request_count"] == n + 2, ns
        assert ns["ml_failure_count"] == 0, ns
        assert ns["ml_deployed_model_count"] == 1, ns
        assert ns["ml_executing_task_count"] == 0, ns
        assert ns["ml_circuit_breaker_trigger_count"] == 0, ns
        remote = ns["algorithms"]["remote"]
        assert remote["predict"] == {"ml_action_request_count": n, "ml_action_failure_count": 0}
        assert remote["register"]["ml_action_request_count"] == 1, remote
        assert remote["deploy"]["ml_action_request_count"] == 1, remote
        model = ns["models"][mid]
        assert model["predict"]["ml_action_request_count"] == n, model
        assert model["register"]["ml_action_request_count"] == 1, model
        assert model["deploy"]["ml_action_request_count"] == 1, model

        expect_fail = predict(s, "aaaaaaaaaaaaaaaaaaaa", MESSAGES)
        assert expect_fail.status == 404
        ns = s.get(ML + "/stats").json["nodes"][node]
        assert ns["ml_failure_count"] == 1 and ns["ml_request_count"] == n + 3, ns
        assert "aaaaaaaaaaaaaaaaaaaa" not in ns["models"], ns  # unknown ids get no entry


def test_stats_selection_and_nodes(h):
    s = h.server()
    empty = s.get(ML + "/stats").json
    assert empty["ml_model_index_status"] == "non-existent", empty
    assert empty["ml_model_count"] == 0 and empty["ml_connector_count"] == 0, empty
    node = node_of(s)
    r = s.get(ML + "/stats/ml_request_count,ML_MODEL_COUNT")
    assert r.json == {"ml_model_count": 0, "nodes": {node: {"ml_request_count": 0}}}, r
    r = s.get(ML + "/stats/ml_connector_count")
    assert r.json == {"ml_connector_count": 0}, r
    for who in (node, "_local", "_all"):
        r = s.get(ML + "/%s/stats/ml_deployed_model_count" % who)
        assert r.json == {"nodes": {node: {"ml_deployed_model_count": 0}}}, (who, r)
    # An unknown node answers nothing for nodes, as OpenSearch does, but keeps cluster stats.
    r = s.get(ML + "/nosuchnode/stats")
    assert r.status == 200 and "nodes" not in r.json and "ml_model_count" in r.json, r
    r = s.get(ML + "/nosuchnode/stats/ml_request_count")
    assert r.status == 200 and r.json == {}, r
    r = s.get(ML + "/stats/bogus_stat")
    assert r.status == 400 and r.error() == ("illegal_argument_exception",
                                             "Wrong ML cluster level stat"), r
    # The body form (MLStatsInput).
    r = s.request("GET", ML + "/stats", body={"target_stat_levels": ["node"],
                                              "node_level_stats": ["ml_request_count"]})
    assert r.json == {"nodes": {node: {"ml_request_count": 0}}}, r
    r = s.request("GET", ML + "/stats", body={"node_ids": "x"})
    assert r.status == 400, r


# -- ML Commons profile ------------------------------------------------------------------------------

def check_latency(stats, count):
    assert stats["count"] == count, stats
    assert set(stats) == {"count", "max", "min", "average", "p50", "p90", "p99"}, stats
    assert 0 < stats["min"] <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"], stats
    assert stats["min"] <= stats["average"] <= stats["max"], stats


def test_profile_models_latency_window(h):
    n = 6
    with relay(h) as (s, up):
        mid = model_for(s, up, "v1/chat/completions")
        other = model_for(s, up, "v1/chat/completions")
        deploy(s, mid)
        deploy(s, other)
        for _ in range(n):
            predict_ok(s, mid, MESSAGES)
        node = node_of(s)
        r = s.get(ML + "/profile")
        assert r.status == 200, r
        models = r.json["nodes"][node]["models"]
        assert set(models) == {mid, other}, models
        m = models[mid]
        assert m["model_state"] == "DEPLOYED", m
        assert m["worker_nodes"] == [node] and m["target_worker_nodes"] == [node], m
        assert m["predictor"].startswith("org.opensearch.ml.engine.algorithms.remote."), m
        check_latency(m["predict_request_stats"], n)
        assert "predict_request_stats" not in models[other], models  # never predicted
        assert "tasks" not in r.json["nodes"][node], r  # nothing running

        r = s.get(ML + "/profile/models/%s,nosuchmodel" % mid)
        assert list(r.json["nodes"][node]["models"]) == [mid], r
        assert s.get(ML + "/profile/models/nosuchmodel").json == {}
        assert s.get(ML + "/profile/tasks").json == {}
        r = s.request("GET", ML + "/profile", body={"model_ids": [other]})
        assert list(r.json["nodes"][node]["models"]) == [other], r
        r = s.request("GET", ML + "/profile", body={"node_ids": ["elsewhere"],
                                                    "return_all_models": True})
        assert r.json == {}, r
        for bad in ({"model_ids": 5}, {"node_ids": ["a"], "task_ids": [1]}):
            r = s.request("GET", ML + "/profile", body=bad)
            assert r.status == 400 and r.error()[0] == "illegal_argument_exception", (bad, r)

        # The window is plugins.ml_commons.monitoring_request_count predicts long.
        window = "plugins.ml_commons.monitoring_request_count"
        r = s.put(SETTINGS, {"persistent": {window: 3}})
        assert r.status == 200, r
        r = s.get(ML + "/profile/models/" + mid)
        check_latency(r.json["nodes"][node]["models"][mid]["predict_request_stats"], 3)
        predict_ok(s, mid, MESSAGES)
        r = s.get(ML + "/profile/models/" + mid)
        check_latency(r.json["nodes"][node]["models"][mid]["predict_request_stats"], 3)
        assert s.put(SETTINGS, {"persistent": {window: 0}}).status == 200
        r = s.get(ML + "/profile/models/" + mid)
        assert "predict_request_stats" not in r.json["nodes"][node]["models"][mid], r
        assert s.put(SETTINGS, {"persistent": {window: None}}).status == 200  # back to 100
        for _ in range(2):
            predict_ok(s, mid, MESSAGES)
        r = s.get(ML + "/profile/models/" + mid)
        check_latency(r.json["nodes"][node]["models"][mid]["predict_request_stats"], 2)


def test_profile_shows_running_tasks(h):
    with relay(h) as (s, up):
        mid = model_for(s, up, "slow/1500")
        deploy(s, mid)
        r = s.post(ML + "/models/%s/_predict?async=true" % mid, {"parameters": MESSAGES})
        assert r.status == 200, r
        tid = r.json["task_id"]
        node = node_of(s)
        tasks = {}
        for _ in range(50):
            j = s.get(ML + "/profile/tasks").json
            tasks = j.get("nodes", {}).get(node, {}).get("tasks", {})
            if tasks:
                break
        assert tid in tasks, tasks
        t = tasks[tid]
        assert t["task_id"] == tid and t["task_type"] == "PREDICTION", t
        assert t["state"] == "RUNNING" and t["model_id"] == mid, t
        r = s.get(ML + "/profile/tasks/" + tid)
        assert list(r.json["nodes"][node]["tasks"]) == [tid], r
        assert "models" not in r.json["nodes"][node], r
