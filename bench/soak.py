#!/usr/bin/env python3
"""Soak test: mixed load for a long time while the server's memory and open fds are watched.

Usage: bench/soak.py [--binary build/mlrelay] [--duration 600] [--warmup 60] [--margin-mb 24]
                     [--clients 6]

It starts the mock provider (tests/http/upstream.py) and mlrelay on a fresh data dir, sets up a
chat model and an embedding model, then runs --clients threads, each on its own keep-alive
connection, doing a weighted mix of: sync predicts, async predicts, batch ingest jobs (20 docs),
task GETs, task/model searches, settings changes, model registers and deletes of finished tasks.
Every second a sampler reads VmRSS and the number of open fds from /proc/<pid>. At the end it
stops the server with SIGTERM (exit 0 expected; under an ASan build LeakSanitizer runs then) and
prints: requests by kind, unexpected answers, RSS each minute, RSS after the warm-up, at the end
and its maximum, fds min/max.

Fails (exit 1) when any request got an unexpected status or a connection error, when the server
did not exit 0, when its stderr holds a sanitizer report, or when RSS at the end exceeds RSS
after the warm-up by more than --margin-mb (SQLite page caches, malloc arenas and connection
pools should be warm after a minute; what grows after that is a leak).
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ML = "/_plugins/_ml"
CHAT_BODY = "{ \"model\": \"${parameters.model}\", \"messages\": ${parameters.messages} }"
EMBED_BODY = "{ \"input\": ${parameters.input}, \"model\": \"${parameters.model}\" }"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_sample(pid):
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss / 1024.0, len(os.listdir("/proc/%d/fd" % pid))


class Client:
    def __init__(self, port):
        self.port = port
        self.c = None

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (0, 1):
            if self.c is None:
                self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                self.c.request(method, path, body=data,
                               headers={"Content-Type": "application/json"} if data else {})
                r = self.c.getresponse()
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.c.close()
                self.c = None
                if attempt:
                    raise


def setup(c, up_port):
    def ok(method, path, body=None):
        st, j = c.call(method, path, body)
        assert st == 200, (path, st, j)
        return j
    ok("PUT", "/_cluster/settings", {"persistent": {
        "plugins.ml_commons.trusted_connector_endpoints_regex": ["^http://127\\.0\\.0\\.1:.*$"],
        "plugins.ml_commons.connector.private_ip_enabled": True}})

    def connector(path, body, **extra):
        action = {"action_type": "predict", "method": "POST",
                  "url": "http://${parameters.endpoint}/" + path,
                  "headers": {"Authorization": "Bearer ${credential.key}"},
                  "request_body": body}
        action.update(extra)
        return ok("POST", ML + "/connectors/_create", {
            "name": path, "version": 1, "protocol": "http",
            "parameters": {"endpoint": "127.0.0.1:%d" % up_port, "model": "m"},
            "credential": {"key": "sk-soak"}, "client_config": {"max_connection": 32},
            "actions": [action]})["connector_id"]

    chat_conn = connector("v1/chat/completions", CHAT_BODY)
    emb_conn = connector("v1/embeddings", EMBED_BODY,
                         pre_process_function="connector.pre_process.openai.embedding",
                         post_process_function="connector.post_process.openai.embedding")
    models = {}
    for name, cid in (("chat", chat_conn), ("embed", emb_conn)):
        j = ok("POST", ML + "/models/_register?deploy=true",
               {"name": "soak " + name, "function_name": "remote", "connector_id": cid})
        models[name] = j["model_id"]
    for _ in range(100):
        st, j = c.call("GET", ML + "/models/" + models["embed"])
        if j.get("model_state") == "DEPLOYED":
            break
        time.sleep(0.05)
    models["chat_connector"] = chat_conn
    return models


class Load:
    """The weighted mix; each op returns (kind, status, expected statuses)."""

    def __init__(self, models):
        self.m = models
        self.tasks = []  # recent task ids, shared (list ops are atomic under the GIL)
        self.n = 0

    def op(self, c, rnd):
        self.n += 1
        x = rnd.random()
        chat, emb = self.m["chat"], self.m["embed"]
        msg = {"messages": [{"role": "user", "content": "soak %d" % self.n}]}
        if x < 0.35:
            st, _ = c.call("POST", ML + "/models/%s/_predict" % chat, {"parameters": msg})
            return "predict", st, (200,)
        if x < 0.45:
            st, _ = c.call("POST", ML + "/_predict/text_embedding/" + emb,
                           {"text_docs": ["a doc %d" % self.n, "another"]})
            return "embed", st, (200,)
        if x < 0.55:
            st, j = c.call("POST", ML + "/models/%s/_predict?async=true" % chat,
                           {"parameters": msg})
            if st == 200:
                self.tasks.append(j["task_id"])
            return "async_predict", st, (200,)
        if x < 0.58:
            st, j = c.call("POST", ML + "/models/%s/_batch_ingest" % emb,
                           {"text_docs": ["doc %d %d" % (self.n, i) for i in range(20)],
                            "batch_size": 5, "max_concurrency": 2})
            if st == 200:
                self.tasks.append(j["task_id"])
            return "batch_ingest", st, (200,)
        if x < 0.70 and self.tasks:
            st, _ = c.call("GET", ML + "/tasks/" + rnd.choice(self.tasks[-200:]))
            return "task_get", st, (200, 404)
        if x < 0.78:
            st, _ = c.call("POST", ML + "/tasks/_search", {
                "query": {"bool": {"filter": [{"term": {"state": "COMPLETED"}},
                                              {"term": {"task_type": "PREDICTION"}}]}},
                "size": 20, "sort": [{"create_time": "desc"}]})
            return "task_search", st, (200,)
        if x < 0.84:
            st, _ = c.call("POST", ML + "/models/_search",
                           {"query": {"match": {"name": "soak"}}, "size": 5})
            return "model_search", st, (200,)
        if x < 0.87:
            st, _ = c.call("PUT", "/_cluster/settings", {"transient": {
                "plugins.ml_commons.sync_up_job_interval_in_seconds": rnd.randint(1, 20)}})
            return "settings_put", st, (200,)
        if x < 0.89:
            st, _ = c.call("GET", "/_cluster/settings?include_defaults=true")
            return "settings_get", st, (200,)
        if x < 0.92:
            st, _ = c.call("POST", ML + "/models/_register", {
                "name": "soak reg %d" % self.n, "function_name": "remote",
                "connector_id": self.m["chat_connector"]})
            return "register", st, (200,)
        if self.tasks:
            tid = self.tasks.pop(0)
            st, _ = c.call("DELETE", ML + "/tasks/" + tid)
            return "task_delete", st, (200, 400, 404)  # 400: still running
        st, _ = c.call("GET", "/")
        return "root", st, (200,)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "mlrelay"))
    ap.add_argument("--duration", type=int, default=600, help="seconds of load")
    ap.add_argument("--warmup", type=int, default=60, help="seconds before the RSS baseline")
    ap.add_argument("--margin-mb", type=float, default=24.0)
    ap.add_argument("--clients", type=int, default=6)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="mlrelay-soak-")
    up_port = free_port()
    up = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "http", "upstream.py"),
                           str(up_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    errlog = open(os.path.join(tmp, "stderr.log"), "w+")
    p = subprocess.Popen([a.binary, "--listen", "127.0.0.1:0", "--data-dir",
                          os.path.join(tmp, "data")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    port = None
    for raw in iter(p.stderr.readline, b""):
        line = raw.decode()
        errlog.write(line)
        if ": listening" in line:
            port = int(line.split("port=")[1].split()[0])
            break
    if port is None:
        raise SystemExit("mlrelay did not start")

    def pump():
        for raw in iter(p.stderr.readline, b""):
            errlog.write(raw.decode("utf-8", "replace"))

    threading.Thread(target=pump, daemon=True).start()
    time.sleep(0.5)  # the mock is listening
    load = Load(setup(Client(port), up_port))

    counts, bad = {}, []
    lock = threading.Lock()
    stop = threading.Event()
    samples = []  # (t, rss MB, fds)
    t_start = time.time()

    def sampler():
        while not stop.is_set():
            rss, fds = proc_sample(p.pid)
            samples.append((time.time() - t_start, rss, fds))
            time.sleep(1.0)

    def worker(k):
        rnd = random.Random(k)
        c = Client(port)
        while not stop.is_set():
            try:
                kind, st, expect = load.op(c, rnd)
            except Exception as e:  # connection errors count as failures
                with lock:
                    bad.append(("error", repr(e)))
                time.sleep(0.1)
                continue
            with lock:
                counts[kind] = counts.get(kind, 0) + 1
                if st not in expect:
                    bad.append((kind, st))

    threading.Thread(target=sampler, daemon=True).start()
    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(a.clients)]
    for t in threads:
        t.start()
    next_report = 60
    while time.time() - t_start < a.duration:
        time.sleep(1)
        el = time.time() - t_start
        if el >= next_report and samples:
            print("  %4ds: %7d requests, RSS %.1f MB, fds %d, unexpected %d" % (
                el, sum(counts.values()), samples[-1][1], samples[-1][2], len(bad)), flush=True)
            next_report += 60
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.time() - t_start
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=60)
    up.terminate()
    up.wait()
    errlog.flush()
    errlog.seek(0)
    stderr = errlog.read()
    errlog.close()
    shutil.rmtree(tmp, ignore_errors=True)

    total = sum(counts.values())
    base = [s for s in samples if s[0] >= a.warmup]
    rss_warm = base[0][1] if base else samples[0][1]
    rss_end = samples[-1][1]
    rss_max = max(s[1] for s in samples)
    fds = [s[2] for s in samples]
    print("soak: %.0f s, %d requests (%.0f/s) by %d clients" % (elapsed, total, total / elapsed,
                                                                a.clients))
    print("  by kind: " + ", ".join("%s %d" % kv for kv in sorted(counts.items())))
    print("  RSS per minute (MB): " + " ".join("%.1f" % s[1] for s in samples[::60]))
    print("  RSS: %.1f MB after %d s warm-up, %.1f MB at the end, %.1f MB max; growth %.1f MB "
          "(margin %.0f)" % (rss_warm, a.warmup, rss_end, rss_max, rss_end - rss_warm,
                             a.margin_mb))
    print("  fds: min %d, max %d" % (min(fds), max(fds)))
    print("  unexpected answers: %d %s" % (len(bad), bad[:10]))
    failed = []
    if bad:
        failed.append("unexpected answers")
    if code != 0:
        failed.append("server exit %s" % code)
    for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "ThreadSanitizer"):
        if marker in stderr:
            failed.append("sanitizer report: " + marker)
    if rss_end - rss_warm > a.margin_mb:
        failed.append("RSS grew %.1f MB after warm-up" % (rss_end - rss_warm))
    if failed:
        print("FAIL: " + "; ".join(failed))
        print(stderr[-4000:])
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
