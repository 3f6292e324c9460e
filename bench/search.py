#!/usr/bin/env python3
"""Search benchmark: 1,000,000 task rows and 100,000 models, then timed `_search` requests.

Usage: bench/search.py [--binary build/mlrelay] [--tasks 1000000] [--models 100000] [--runs 50]

It starts mlrelay once on a fresh data dir (so the real migrations create the schema), stops it,
bulk-loads rows straight into SQLite in the same shape the store writes (document + derived
columns), restarts mlrelay and times each query over HTTP on one keep-alive connection. It prints,
per query, the server-side `took` and the client round-trip (p50 / p99 / max, in ms). The target
(issue: resources) is under 10 ms for term/terms searches and for a sorted page.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

STATES = ["CREATED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "COMPLETED_WITH_ERROR"]
TYPES = ["REGISTER_MODEL", "DEPLOY_MODEL", "PREDICTION", "BATCH_INGEST"]
MODEL_STATES = ["REGISTERED", "DEPLOYED", "UNDEPLOYED", "DEPLOY_FAILED"]


def start(binary, data):
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--data-dir", data],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for raw in iter(p.stderr.readline, b""):
        line = raw.decode()
        if ": listening" in line:
            port = int(line.split("port=")[1].split()[0])
            return p, port
    raise SystemExit("mlrelay did not start")


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)


def load(db, ntasks, nmodels):
    rnd = random.Random(42)
    c = sqlite3.connect(db)
    c.execute("PRAGMA synchronous=OFF")
    now = int(time.time() * 1000)
    models = []
    for i in range(nmodels):
        mid = "m%07d" % i
        st = rnd.choice(MODEL_STATES)
        doc = {"name": "model-%d" % i, "model_group_id": "", "algorithm": "REMOTE",
               "model_version": "1", "model_state": st, "created_time": now + i,
               "last_updated_time": now + i}
        models.append((mid, json.dumps(doc), doc["name"], st, now + i, now + i))
    c.executemany("INSERT INTO models(id, doc, name, model_state, created_time, "
                  "last_updated_time) VALUES(?,?,?,?,?,?)", models)
    batch = []
    for i in range(ntasks):
        tid = "t%08d" % i
        st, ty = rnd.choice(STATES), rnd.choice(TYPES)
        mid = "m%07d" % rnd.randrange(nmodels)
        doc = {"model_id": mid, "task_type": ty, "function_name": "REMOTE", "state": st,
               "worker_node": ["node"], "create_time": now + i, "last_update_time": now + i,
               "is_async": True}
        batch.append((tid, json.dumps(doc), ty, st, mid, now + i, now + i))
        if len(batch) == 50000:
            c.executemany("INSERT INTO tasks(id, doc, task_type, state, model_id, create_time, "
                          "last_update_time) VALUES(?,?,?,?,?,?,?)", batch)
            batch = []
    if batch:
        c.executemany("INSERT INTO tasks(id, doc, task_type, state, model_id, create_time, "
                      "last_update_time) VALUES(?,?,?,?,?,?,?)", batch)
    c.commit()
    c.execute("ANALYZE")
    c.close()


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                     "mlrelay"))
    ap.add_argument("--tasks", type=int, default=1000000)
    ap.add_argument("--models", type=int, default=100000)
    ap.add_argument("--runs", type=int, default=50)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mlrelay-bench-")
    data = os.path.join(tmp, "data")
    try:
        p, _ = start(a.binary, data)
        stop(p)
        t0 = time.time()
        load(os.path.join(data, "mlrelay.db"), a.tasks, a.models)
        print("loaded %d tasks and %d models in %.1f s" % (a.tasks, a.models, time.time() - t0))
        p, port = start(a.binary, data)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        queries = [
            ("tasks term state", "tasks", {"query": {"term": {"state": "FAILED"}}}),
            ("tasks term model_id", "tasks", {"query": {"term": {"model_id": "m0001234"}}}),
            ("tasks terms type", "tasks",
             {"query": {"terms": {"task_type": ["DEPLOY_MODEL", "BATCH_INGEST"]}}}),
            ("tasks bool filter", "tasks",
             {"query": {"bool": {"filter": [{"term": {"state": "RUNNING"}},
                                            {"term": {"task_type": "PREDICTION"}}]}}}),
            ("tasks sorted page", "tasks",
             {"sort": [{"create_time": "desc"}], "from": 100, "size": 50}),
            ("models term state", "models", {"query": {"term": {"model_state": "DEPLOYED"}}}),
            ("models terms name", "models",
             {"query": {"terms": {"name.keyword": ["model-7", "model-99999"]}}}),
            ("models sorted page", "models", {"sort": [{"created_time": "asc"}], "size": 100}),
        ]
        print("%-22s %8s %8s %8s %8s %8s" % ("query", "hits", "took50", "rtt50", "rtt99", "max"))
        for name, index, body in queries:
            rtts, tooks, total = [], [], None
            payload = json.dumps(body)
            for _ in range(a.runs):
                t = time.perf_counter()
                conn.request("POST", "/_plugins/_ml/%s/_search" % index, body=payload,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                out = json.loads(r.read())
                rtts.append((time.perf_counter() - t) * 1000)
                assert r.status == 200, out
                tooks.append(out["took"])
                total = out["hits"]["total"]
            print("%-22s %8s %8d %8.2f %8.2f %8.2f" % (name, "%d%s" % (total["value"], "+" if
                  total["relation"] == "gte" else ""), pct(tooks, 50), pct(rtts, 50),
                  pct(rtts, 99), max(rtts)))
        stop(p)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
