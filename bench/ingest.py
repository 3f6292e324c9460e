#!/usr/bin/env python3
"""Batch ingestion benchmark (issue 6 point 2): one `_batch_ingest` job of 100,000 short docs.

Usage: bench/ingest.py [--binary build/mlrelay] [--docs 100000] [--batch-size 64]
                       [--concurrency 16] [--runs 3]

It starts mlrelay on a fresh data dir and the mock provider of tests/http/upstream.py (a separate
Python process on 127.0.0.1) as an instant OpenAI-style embedding upstream, registers an
embedding model (OpenAI pre/post-process functions), deploys it, then for each run submits one
job with every doc and polls the task until it is COMPLETED. It prints, per run, docs/s from the
POST to COMPLETED (input committed, every batch predicted and its results committed with
synchronous=FULL), and mlrelay's RSS before the job and its peak (VmHWM) at the end, against the
target: >= 20,000 docs/s and peak RSS <= 128 MB + the input's size.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ttl import start  # noqa: E402
from search import stop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBED_BODY = "{ \"input\": ${parameters.input}, \"model\": \"${parameters.model}\" }"


def call(c, method, path, body=None):
    c.request(method, path, body=None if body is None else
              (body if isinstance(body, (bytes, str)) else json.dumps(body)),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    out = json.loads(r.read() or b"null")
    assert r.status == 200, (path, r.status, out)
    return out


def mem_mb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":")) / 1024.0


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def setup(c, up_port):
    call(c, "PUT", "/_cluster/settings", {"persistent": {
        "plugins.ml_commons.trusted_connector_endpoints_regex": ["^http://127\\.0\\.0\\.1:.*$"],
        "plugins.ml_commons.connector.private_ip_enabled": True}})
    conn = call(c, "POST", "/_plugins/_ml/connectors/_create", {
        "name": "embed", "version": 1, "protocol": "http",
        "parameters": {"endpoint": "127.0.0.1:%d" % up_port, "model": "text-embedding-3-small"},
        "credential": {"key": "sk-bench"}, "client_config": {"max_connection": 64},
        "actions": [{"action_type": "predict", "method": "POST",
                     "url": "http://${parameters.endpoint}/v1/embeddings",
                     "headers": {"Authorization": "Bearer ${credential.key}"},
                     "request_body": EMBED_BODY,
                     "pre_process_function": "connector.pre_process.openai.embedding",
                     "post_process_function": "connector.post_process.openai.embedding"}]})
    model = call(c, "POST", "/_plugins/_ml/models/_register?deploy=true", {
        "name": "embed", "function_name": "remote", "connector_id": conn["connector_id"]})
    return model["model_id"]


def run_job(c, mid, docs, batch_size, concurrency):
    body = json.dumps({"text_docs": docs, "batch_size": batch_size,
                       "max_concurrency": concurrency}).encode()
    t0 = time.time()
    tid = call(c, "POST", "/_plugins/_ml/models/%s/_batch_ingest" % mid, body)["task_id"]
    while True:
        t = call(c, "GET", "/_plugins/_ml/tasks/" + tid)
        if t["state"] not in ("CREATED", "RUNNING"):
            break
        time.sleep(0.02)
    elapsed = time.time() - t0
    assert t["state"] == "COMPLETED", t
    assert t["progress"]["completed"] == len(docs), t
    return elapsed, len(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "mlrelay"))
    ap.add_argument("--docs", type=int, default=100000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mlrelay-bench-")
    up_port = free_port()
    up = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "http", "upstream.py"),
                           str(up_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    p = None
    try:
        p, port = start(a.binary, os.path.join(tmp, "data"), os.path.join(tmp, "log"))
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        time.sleep(0.5)  # the upstream is listening
        mid = setup(c, up_port)
        docs = ["short document number %d about topic %d" % (i, i % 97) for i in range(a.docs)]
        for run in range(1, a.runs + 1):
            before = mem_mb(p.pid, "VmRSS")
            elapsed, size = run_job(c, mid, docs, a.batch_size, a.concurrency)
            peak = mem_mb(p.pid, "VmHWM")
            print("run %d: %d docs in %.2f s = %.0f docs/s; RSS before %.0f MB, peak %.0f MB "
                  "(target <= 128 + %.1f MB input = %.1f MB)"
                  % (run, a.docs, elapsed, a.docs / elapsed, before, peak, size / 1048576.0,
                     128 + size / 1048576.0))
        stop(p)
        p = None
    finally:
        if p:
            p.kill()
        up.terminate()
        up.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
