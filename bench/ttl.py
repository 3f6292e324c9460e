#!/usr/bin/env python3
"""TTL benchmark (issue 6 point 1): 100,000 deployed models with random TTLs expire on their own.

Usage: bench/ttl.py [--binary build/mlrelay] [--models 100000] [--min-ttl 20] [--max-ttl 60]

It starts mlrelay once on a fresh data dir to create the schema and a connector, stops it, and
bulk-loads the models straight into SQLite as DEPLOYED, each with
deploy_setting.model_ttl_minutes drawn uniformly from [min-ttl, max-ttl] seconds and a last-use
time of "now". It then restarts mlrelay, which redeploys them all at start-up (the restart path
of the TTL: deadlines come from the stored last-use time), and waits until every model is
UNDEPLOYED, sampling the process's CPU time and RSS once a second.

It prints: the redeploy time and RSS with every model deployed; the sweep cost (mlrelay CPU per
second of wall time while models expire, and CPU per expired model — this includes writing and
running each model's UNDEPLOY_MODEL task, not only the heap); and the lateness of each undeploy
(last_undeployed_time - deadline, where the deadline is the stored ttl_deadline_ms) as p50 / p99 /
max. The target (spec §5) is every model undeployed within 1 s of its deadline.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from search import pct, stop  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_rss(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime, seconds
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024.0
    return cpu, rss


def start(binary, data, logpath):
    """Starts mlrelay with its log in @logpath (a pipe nobody reads would fill and stall it)."""
    with open(logpath, "wb") as log:
        p = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--data-dir", data],
                             stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        with open(logpath) as f:
            for line in f:
                if ": listening" in line:
                    return p, int(line.split("port=")[1].split()[0])
        time.sleep(0.1)
    raise SystemExit("mlrelay did not start; see " + logpath)


def create_connector(port):
    c = http.client.HTTPConnection("127.0.0.1", port)
    body = {"name": "ttl bench", "version": 1, "protocol": "http",
            "parameters": {"endpoint": "127.0.0.1:9"}, "credential": {"key": "k"},
            "actions": [{"action_type": "predict", "method": "POST",
                         "url": "http://${parameters.endpoint}/v1/x", "request_body": "{}"}]}
    c.request("PUT", "/_cluster/settings", body=json.dumps({"persistent": {
        "plugins.ml_commons.trusted_connector_endpoints_regex": ["^http://127\\.0\\.0\\.1:.*$"]}}),
        headers={"Content-Type": "application/json"})
    assert c.getresponse().read() is not None
    c.request("POST", "/_plugins/_ml/connectors/_create", body=json.dumps(body),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    out = json.loads(r.read())
    assert r.status == 200, out
    return out["connector_id"]


def load(db, n, cid, min_ttl, max_ttl):
    rnd = random.Random(7)
    c = sqlite3.connect(db)
    now = int(time.time() * 1000)
    rows = []
    for i in range(n):
        ttl_min = rnd.uniform(min_ttl, max_ttl) / 60.0
        doc = {"name": "ttl-%d" % i, "algorithm": "REMOTE", "model_version": "1",
               "model_state": "DEPLOYED", "connector_id": cid, "function_name": "REMOTE",
               "deploy_setting": {"model_ttl_minutes": ttl_min},
               "created_time": now, "last_updated_time": now}
        rows.append(("m%07d" % i, json.dumps(doc), doc["name"], cid, now, now, now))
    c.executemany("INSERT INTO models(id, doc, name, connector_id, model_state, created_time, "
                  "last_updated_time, last_used_ms) VALUES(?,?,?,?,'DEPLOYED',?,?,?)", rows)
    c.commit()
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                     "mlrelay"))
    ap.add_argument("--models", type=int, default=100000)
    ap.add_argument("--min-ttl", type=float, default=20.0, help="seconds")
    ap.add_argument("--max-ttl", type=float, default=60.0, help="seconds")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mlrelay-bench-")
    data = os.path.join(tmp, "data")
    db = os.path.join(data, "mlrelay.db")
    try:
        p, port = start(a.binary, data, os.path.join(tmp, "log1"))
        cid = create_connector(port)
        stop(p)
        load(db, a.models, cid, a.min_ttl, a.max_ttl)
        loaded = time.time()
        p, port = start(a.binary, data, os.path.join(tmp, "log2"))
        ready = time.time()
        cpu0, rss = proc_cpu_rss(p.pid)
        print("redeployed %d models in %.1f s (the first deadline is %.0f s after loading); "
              "RSS %.0f MB" % (a.models, ready - loaded, a.min_ttl, rss))
        ro = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
        samples, peak = [], rss
        while True:
            time.sleep(1)
            cpu, rss = proc_cpu_rss(p.pid)
            peak = max(peak, rss)
            left = ro.execute("SELECT count(*) FROM models WHERE model_state = 'DEPLOYED'") \
                .fetchone()[0]
            samples.append((time.time(), cpu, left))
            if left == 0 or time.time() - loaded > a.max_ttl + 60:
                break
        first = next(i for i, s in enumerate(samples) if s[2] < a.models)
        t0, c0, _ = samples[max(0, first - 1)]
        t1, c1, _ = samples[-1]
        expired = a.models - samples[-1][2]
        print("expired %d models over %.1f s: mlrelay CPU %.1f ms per second of wall time, "
              "%.1f us per expired model (idle before expiry: %.1f ms/s); peak RSS %.0f MB"
              % (expired, t1 - t0, (c1 - c0) * 1000 / (t1 - t0), (c1 - c0) * 1e6 / max(1, expired),
                 (samples[max(0, first - 1)][1] - cpu0) * 1000 / max(0.001, t0 - ready), peak))
        late = [r[0] / 1000.0 for r in ro.execute(
            "SELECT json_extract(doc, '$.last_undeployed_time') - ttl_deadline_ms FROM models "
            "WHERE model_state = 'UNDEPLOYED' AND ttl_deadline_ms IS NOT NULL")]
        ro.close()
        stop(p)
        print("undeploy lateness (s): p50 %.3f  p99 %.3f  max %.3f  (%d models)"
              % (pct(late, 50), pct(late, 99), max(late), len(late)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
