"""Batch ingestion jobs (spec README §7; issue 6 point 2): `_batch_ingest`, progress, paged
results, retries and failed items, cancel, fair sharing, and resuming after kill -9 or a stop.

The model is an OpenAI-style embedding connector on the mock of upstream.py: each doc's vector is
[len(doc), 0.5, -0.0043460787], so a result can be matched to its doc.
"""

import json
import threading
import time

from test_predict import (CHAT_BODY, EMBED_BODY, ML, create_connector, connector, expect_error,
                          model_for, register, relay)

FINAL = ("COMPLETED", "FAILED", "CANCELLED", "COMPLETED_WITH_ERROR")


def embed_model(s, up, path="v1/embeddings", client_config=None):
    return model_for(s, up, path, body=EMBED_BODY, params={"model": "text-embedding-ada-002"},
                     pre="connector.pre_process.openai.embedding",
                     post="connector.post_process.openai.embedding",
                     client_config=client_config)


def docs(n, prefix="doc"):
    """n distinct docs whose lengths differ, so vectors tell them apart."""
    return ["%s-%d-%s" % (prefix, i, "x" * (i % 7)) for i in range(n)]


def ingest(s, mid, body):
    r = s.post(ML + "/models/%s/_batch_ingest" % mid, body)
    assert r.status == 200, r
    assert r.json["status"] == "CREATED" and set(r.json) == {"task_id", "status"}, r
    return r.json["task_id"]


def task(s, tid):
    r = s.get(ML + "/tasks/" + tid)
    assert r.status == 200, r
    return r.json


def wait_final(s, tid, timeout=20):
    deadline = time.time() + timeout
    while True:
        t = task(s, tid)
        if t["state"] in FINAL:
            return t
        assert time.time() < deadline, t
        time.sleep(0.05)


def all_results(s, tid, page=7):
    """Every recorded result, fetched in pages of @page."""
    out, frm = [], 0
    while True:
        r = s.get(ML + "/tasks/%s/_results?from=%d&size=%d" % (tid, frm, page))
        assert r.status == 200, r
        out.extend(r.json["results"])
        frm += page
        if frm >= r.json["total"]:
            assert len(out) == r.json["total"], (len(out), r.json["total"])
            return out


def check_embeddings(results, texts):
    """Each index appears once, in order, with its doc's vector."""
    assert [x["index"] for x in results] == list(range(len(texts))), [x["index"] for x in results]
    for x in results:
        ir = x["inference_results"]
        assert len(ir) == 1 and ir[0]["status_code"] == 200, x
        out = ir[0]["output"]
        assert len(out) == 1 and out[0]["name"] == "sentence_embedding", x
        assert out[0]["data"][0] == float(len(texts[x["index"]])), (x, texts[x["index"]])


def task_count(s):
    r = s.post(ML + "/tasks/_search", {"query": {"match_all": {}}, "track_total_hits": True})
    return r.json["hits"]["total"]["value"] if r.status == 200 else 0


# -- the happy paths ----------------------------------------------------------------------------

def test_batch_ingest_text_docs(h):
    with relay(h) as (s, up):
        mid = embed_model(s, up)
        texts = docs(10)
        tid = ingest(s, mid, {"text_docs": texts, "batch_size": 3, "max_concurrency": 2})
        t = wait_final(s, tid)
        assert t["state"] == "COMPLETED", t
        assert t["task_type"] == "BATCH_INGEST" and t["function_name"] == "REMOTE", t
        assert t["model_id"] == mid and t["is_async"] is True and "error" not in t, t
        assert t["progress"] == {"total": 10, "completed": 10, "failed": 0}, t
        check_embeddings(all_results(s, tid), texts)
        # Batches of 3: four upstream requests carrying 3, 3, 3 and 1 docs, none twice.
        sent = sorted(json.loads(rq["body"])["input"] for rq in up.requests)
        assert sorted(len(x) for x in sent) == [1, 3, 3, 3], sent
        assert sorted(d for x in sent for d in x) == sorted(texts)


def test_batch_ingest_inputs(h):
    with relay(h) as (s, up):
        mid = register(s, create_connector(s, connector(up, "v1/chat/completions",
                                                        body=CHAT_BODY)))
        inputs = [{"parameters": {"messages": [{"role": "user", "content": "q%d" % i}]}}
                  for i in range(5)]
        tid = ingest(s, mid, {"inputs": inputs, "batch_size": 2})
        t = wait_final(s, tid)
        assert t["state"] == "COMPLETED" and t["progress"]["completed"] == 5, t
        res = all_results(s, tid, page=100)
        assert [x["index"] for x in res] == list(range(5))
        for x in res:
            out = x["inference_results"][0]["output"][0]
            assert out["dataAsMap"]["choices"][0]["message"]["content"] == "echo: q%d" % \
                x["index"], x
        assert up.count() == 5


def test_batch_ingest_results_paging(h):
    with relay(h) as (s, up):
        mid = embed_model(s, up)
        tid = ingest(s, mid, {"text_docs": docs(25), "batch_size": 4})
        wait_final(s, tid)
        r = s.get(ML + "/tasks/%s/_results" % tid)  # defaults: from 0, size 100
        assert r.status == 200 and r.json["total"] == 25 and len(r.json["results"]) == 25, r
        r = s.get(ML + "/tasks/%s/_results?from=5&size=6" % tid)
        assert [x["index"] for x in r.json["results"]] == list(range(5, 11)), r
        r = s.get(ML + "/tasks/%s/_results?from=24&size=10" % tid)
        assert [x["index"] for x in r.json["results"]] == [24], r
        r = s.get(ML + "/tasks/%s/_results?from=30" % tid)
        assert r.status == 200 and r.json == {"total": 25, "results": []}, r
        for bad in ("from=-1", "size=10001", "size=x", "from="):
            expect_error(s.get(ML + "/tasks/%s/_results?%s" % (tid, bad)), 400,
                         etype="illegal_argument_exception")
        expect_error(s.get(ML + "/tasks/nope/_results"), 404, "Failed to find task")
        # Deleting the task deletes its results.
        assert s.delete(ML + "/tasks/" + tid).status == 200
        expect_error(s.get(ML + "/tasks/%s/_results" % tid), 404, "Failed to find task")


def test_batch_ingest_results_of_other_task_types(h):
    with relay(h) as (s, up):
        r = s.post(ML + "/models/_register", {"name": "m", "function_name": "remote",
                                              "connector_id": create_connector(
                                                  s, connector(up, "v1/embeddings"))})
        expect_error(s.get(ML + "/tasks/%s/_results" % r.json["task_id"]), 400,
                     "Only BATCH_INGEST tasks have results")


# -- bad input changes nothing ------------------------------------------------------------------

def test_batch_ingest_validation(h):
    with relay(h) as (s, up):
        mid = embed_model(s, up)
        before = task_count(s)
        cases = [
            ({}, "give exactly one of text_docs and inputs"),
            ({"text_docs": ["a"], "inputs": [{"parameters": {}}]},
             "give exactly one of text_docs and inputs"),
            ({"text_docs": []}, "text_docs must be a non-empty array"),
            ({"text_docs": "a"}, "text_docs must be a non-empty array"),
            ({"text_docs": ["a", 3]}, "text_docs[1] is not a string"),
            ({"inputs": [{"x": 1}]}, "inputs[0] must be an object with a \"parameters\" object"),
            ({"text_docs": ["a"], "batch_size": 0},
             "batch_size must be an integer between 1 and 10000"),
            ({"text_docs": ["a"], "max_concurrency": "8"},
             "max_concurrency must be an integer between 1 and 1024"),
            ({"text_docs": ["a"], "max_retries": -1},
             "max_retries must be an integer between 0 and 100"),
            ({"text_docs": ["a"], "batchsize": 3},
             "unknown field [batchsize] in a batch ingest request"),
        ]
        for body, reason in cases:
            expect_error(s.post(ML + "/models/%s/_batch_ingest" % mid, body), 400, reason,
                         etype="illegal_argument_exception")
        expect_error(s.post(ML + "/models/nope/_batch_ingest", {"text_docs": ["a"]}), 404,
                     "Failed to find model")
        expect_error(s.post(ML + "/models/%s/_batch_ingest" % mid), 400,
                     "Batch ingest request has empty body")
        assert task_count(s) == before
        assert up.count() == 0


# -- failures, cancel, fairness -----------------------------------------------------------------

def test_batch_ingest_failed_batch_is_retried_then_recorded(h):
    with relay(h) as (s, up):
        mid = embed_model(s, up, "embedbad/503")
        texts = docs(9)
        texts[4] = "a bad doc"
        tid = ingest(s, mid, {"text_docs": texts, "batch_size": 3, "max_retries": 2})
        t = wait_final(s, tid)
        assert t["state"] == "COMPLETED_WITH_ERROR", t
        assert t["progress"] == {"total": 9, "completed": 6, "failed": 3}, t
        assert t["error"].startswith("3 of 9 inputs failed; the first error: Error from remote "
                                     "service: "), t
        res = all_results(s, tid)
        assert [x["index"] for x in res] == list(range(9))
        for x in res[3:6]:
            assert x["error"]["status"] == 503, x
            assert "cannot embed a bad doc" in x["error"]["reason"], x
            assert "inference_results" not in x
        assert all("inference_results" in x for x in res[:3] + res[6:])
        # The bad batch went up once and was retried twice.
        bad = [rq for rq in up.requests if "a bad doc" in rq["body"]]
        assert len(bad) == 3, len(bad)


def test_batch_ingest_all_failed(h):
    with relay(h) as (s, up):
        mid = embed_model(s, up, "embedbad/400")
        tid = ingest(s, mid, {"text_docs": ["bad one", "bad two"], "batch_size": 1})
        t = wait_final(s, tid)
        assert t["state"] == "FAILED" and t["progress"]["failed"] == 2, t
        assert up.count() == 2  # a 400 is not retried


def test_batch_ingest_cancel_running(h):
    with relay(h) as (s, up):
        mid = embed_model(s, up, "embedslow/100")
        tid = ingest(s, mid, {"text_docs": docs(200), "batch_size": 2, "max_concurrency": 2})
        deadline = time.time() + 5
        while task(s, tid)["progress"]["completed"] < 4:
            assert time.time() < deadline
            time.sleep(0.05)
        r = s.post(ML + "/tasks/%s/_cancel" % tid)
        assert r.status == 200 and r.json == {"status": "OK"}, r
        time.sleep(0.5)  # calls in flight end; nothing new starts
        sent = up.count()
        time.sleep(0.5)
        assert up.count() == sent
        t = task(s, tid)
        assert t["state"] == "CANCELLED", t
        assert t["progress"]["completed"] < 200
        assert s.get(ML + "/tasks/%s/_results" % tid).json["total"] == t["progress"]["completed"]
        expect_error(s.post(ML + "/tasks/%s/_cancel" % tid), 400,
                     "Task is already in a final state [CANCELLED]")


def test_batch_ingest_jobs_share_max_connection(h):
    """Two jobs on one model whose max_connection is 2 take turns: when the first ends, the
    second has done a good part of its work too (it is not starved until the first is done)."""
    with relay(h) as (s, up):
        mid = embed_model(s, up, "embedslow/20", client_config={"max_connection": 2})
        a = ingest(s, mid, {"text_docs": docs(40, "a"), "batch_size": 1, "max_concurrency": 8})
        b = ingest(s, mid, {"text_docs": docs(40, "b"), "batch_size": 1, "max_concurrency": 8})
        first = None
        deadline = time.time() + 20
        while time.time() < deadline:
            ta, tb = task(s, a), task(s, b)
            if first is None and (ta["state"] in FINAL or tb["state"] in FINAL):
                first = (ta, tb)
            if ta["state"] in FINAL and tb["state"] in FINAL:
                break
            time.sleep(0.02)
        ta, tb = first
        other = tb if ta["state"] in FINAL else ta
        assert other["progress"]["completed"] >= 25, (ta["progress"], tb["progress"])
        for tid in (a, b):
            assert wait_final(s, tid)["state"] == "COMPLETED"


# -- durability ---------------------------------------------------------------------------------

def _interrupt_and_resume(h, interrupt):
    with relay(h) as (s, up):
        mid = embed_model(s, up, "embedslow/30")
        texts = docs(300)
        tid = ingest(s, mid, {"text_docs": texts, "batch_size": 5, "max_concurrency": 4})
        deadline = time.time() + 10
        while task(s, tid)["progress"]["completed"] < 60:
            assert time.time() < deadline
            time.sleep(0.02)
        interrupt(s)
        s.start()
        t = wait_final(s, tid, timeout=30)
        assert t["state"] == "COMPLETED", t
        assert t["progress"] == {"total": 300, "completed": 300, "failed": 0}, t
        check_embeddings(all_results(s, tid, page=50), texts)
        return s, up


def test_batch_ingest_resumes_after_kill9(h):
    s, up = _interrupt_and_resume(h, lambda s: s.kill9())
    # Only unfinished batches ran again: at most the 4 in flight at the kill were sent twice.
    assert 60 <= up.count() <= 60 + 4, up.count()
    assert "resuming batch ingestion job" in s.log()


def test_batch_ingest_resumes_after_graceful_stop(h):
    s, up = _interrupt_and_resume(h, lambda s: s.stop())
    assert 60 <= up.count() <= 60 + 4, up.count()
