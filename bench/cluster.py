#!/usr/bin/env python3
"""Multi-node throughput (issue 10, point 5): end-to-end durable tasks/s with 1, 2 and 3 mlrelay
nodes on one PostgreSQL store, on this machine.

Usage: python3 bench/cluster.py [-c CONNS] [-d SECONDS] [-n NODES,...] [--no-build]

For each node count N: a fresh database on a throwaway PostgreSQL cluster (scripts/pg-cluster,
fsync on, on BENCH_TMPDIR, default /var/tmp: a real disk), N nodes sharing it and one master key,
the trusted-endpoint setting, one connector and one model group per node. Then CONNS keep-alive clients,
split evenly over the nodes, POST /_plugins/_ml/models/_register back to back for SECONDS (each
acknowledged request is a committed model row plus a REGISTER_MODEL task, which any node may
claim and run) using bench/loadgen.c, one load generator per node. Reported per N: acknowledged
registers/s, p50/p99 submit latency, and end-to-end durable tasks/s = acknowledged tasks / time
from the first request until the whole backlog is COMPLETED; plus the CPU seconds the mlrelay
processes and PostgreSQL used, which is what bounds scaling on two cores.

Only 127.0.0.1 and unix sockets are used; everything started is stopped on every exit path.
"""

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def http(port, method, path, body=None):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def cpu_seconds(pid):
    """User + system CPU seconds of process @pid and its children that were waited for."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        hz = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / hz
    except OSError:
        return 0.0


def pg_cpu_seconds():
    """CPU seconds of every postgres process (the server and its backends)."""
    total = 0.0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/comm" % p) as f:
                    if f.read().strip() in ("postgres", "postmaster"):
                        total += cpu_seconds(int(p))
            except OSError:
                pass
    return total


class Bench:
    def __init__(self, a):
        self.a = a
        self.procs = []
        self.work = tempfile.mkdtemp(prefix="mlrelay-cluster-",
                                     dir=os.environ.get("BENCH_TMPDIR", "/var/tmp"))
        os.chmod(self.work, 0o755)  # as root, the cluster runs as `postgres`, which must enter
        self.pg_dir = os.path.join(self.work, "pg")
        self.pg_base = None

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.pg_base:
            subprocess.run([os.path.join(ROOT, "scripts/pg-cluster"), "stop", self.pg_dir],
                           capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)

    def setup(self):
        if self.a.build:
            log("== building build-rel/mlrelay (RelWithDebInfo)")
            subprocess.run(["cmake", "-S", ROOT, "-B", os.path.join(ROOT, "build-rel"),
                            "-DCMAKE_BUILD_TYPE=RelWithDebInfo", "-DMLR_TESTS=OFF"], check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run(["cmake", "--build", os.path.join(ROOT, "build-rel"), "-j2"],
                           check=True, stdout=subprocess.DEVNULL)
        self.bin = os.environ.get("MLRELAY_BIN", os.path.join(ROOT, "build-rel/mlrelay"))
        self.loadgen = os.path.join(self.work, "loadgen")
        subprocess.run(["cc", "-O2", "-Wall", "-o", self.loadgen,
                        os.path.join(ROOT, "bench/loadgen.c")], check=True)
        out = subprocess.run([os.path.join(ROOT, "scripts/pg-cluster"), "start", self.pg_dir,
                              "on"], check=True, capture_output=True, text=True)
        self.pg_base = out.stdout.strip()
        log("== PostgreSQL at %s (fsync on)" % self.pg_base)

    def url(self, db):
        head, query = self.pg_base.split("?", 1)
        return head.rsplit("/", 1)[0] + "/" + db + "?" + query

    def psql(self, sql):
        subprocess.run(["psql", "-X", "-q", "-d", self.url("postgres"), "-c", sql], check=True,
                       capture_output=True)

    def start_node(self, n, i, db, key):
        d = os.path.join(self.work, "n%d-%d" % (n, i))
        os.makedirs(d)
        logf = open(os.path.join(d, "server.log"), "w")
        p = subprocess.Popen([self.bin, "--listen", "127.0.0.1:0", "--data-dir", d, "--store",
                              self.url(db), "--access-log", "false"],
                             stderr=logf, stdout=logf, env=dict(os.environ,
                                                                 MLRELAY_MASTER_KEY=key))
        self.procs.append(p)
        for _ in range(200):
            with open(os.path.join(d, "server.log")) as f:
                for line in f:
                    if ": listening" in line and "port=" in line:
                        return p, int(line.split("port=")[1].split()[0])
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit("node did not start: " + open(os.path.join(d, "server.log")).read())

    def propagation(self, ports, gid, cid, reps=10):
        """How long a change through the first node takes to show on the last: a persistent
        setting (GET /_cluster/settings), a deploy and an undeploy (the last node's profile
        lists the model only while it holds a deployment of it). Seconds, sorted."""
        first, last = ports[0], ports[-1]
        out = {"settings": [], "deploy": [], "undeploy": []}

        def until(fn, limit=10.0):
            t = time.time()
            while not fn():
                if time.time() - t > limit:
                    raise SystemExit("change did not propagate within %.0f s" % limit)
                time.sleep(0.002)

        def held(mid):
            nodes = http(last, "GET", "/_plugins/_ml/profile/models/" + mid).get("nodes", {})
            return any(mid in v.get("models", {}) for v in nodes.values())

        for i in range(reps):
            t0 = time.time()
            http(first, "PUT", "/_cluster/settings", {"persistent": {
                "plugins.ml_commons.max_model_on_node": str(100 + i)}})
            until(lambda: http(last, "GET", "/_cluster/settings?flat_settings=true")
                  ["persistent"].get("plugins.ml_commons.max_model_on_node") == str(100 + i))
            out["settings"].append(time.time() - t0)
            mid = http(first, "POST", "/_plugins/_ml/models/_register", {
                "name": "p%d" % i, "function_name": "remote", "model_group_id": gid,
                "connector_id": cid})["model_id"]
            t0 = time.time()
            http(first, "POST", "/_plugins/_ml/models/%s/_deploy" % mid)
            until(lambda: held(mid))
            out["deploy"].append(time.time() - t0)
            t0 = time.time()
            http(first, "POST", "/_plugins/_ml/models/%s/_undeploy" % mid)
            until(lambda: not held(mid))
            out["undeploy"].append(time.time() - t0)
        return {k: sorted(v) for k, v in out.items()}

    def measure(self, n):
        db = "bench_%d_%d" % (n, os.getpid())
        self.psql("CREATE DATABASE %s" % db)
        key = base64.b64encode(os.urandom(32)).decode()
        nodes = [self.start_node(n, i, db, key) for i in range(n)]
        ports = [port for _, port in nodes]
        http(ports[0], "PUT", "/_cluster/settings", {"persistent": {
            "plugins.ml_commons.trusted_connector_endpoints_regex": ["^http://127\\.0\\.0\\.1:.*$"]}})
        cid = http(ports[0], "POST", "/_plugins/_ml/connectors/_create", {
            "name": "c", "version": 1, "protocol": "http",
            "parameters": {"endpoint": "127.0.0.1:9"}, "credential": {"k": "v"},
            "actions": [{"action_type": "predict", "method": "POST",
                         "url": "http://${parameters.endpoint}/x"}]})["connector_id"]
        # Each node's clients register into their own group: a register bumps its group's
        # latest_version, and one group shared by every node would make that one row the
        # bottleneck (its lock is held until each commit) instead of the task queue.
        gids = [http(ports[0], "POST", "/_plugins/_ml/model_groups/_register",
                     {"name": "bench%d" % i})["model_group_id"] for i in range(n)]
        gid = gids[0]
        time.sleep(1.5)  # every node has beaten and mirrored the settings
        conns = max(1, self.a.conns // n)
        cpu0 = [cpu_seconds(p.pid) for p, _ in nodes]
        pg0 = pg_cpu_seconds()
        t0 = time.time()
        gens = [subprocess.Popen([self.loadgen, "http", "-p", str(port), "-c", str(conns),
                                  "-d", str(self.a.seconds), "-g", gids[i], "-k", cid, "-i",
                                  "0", "-w", "300"], stdout=subprocess.PIPE, text=True)
                for i, port in enumerate(ports)]
        results = []
        for g in gens:
            out, _ = g.communicate(timeout=self.a.seconds + 400)
            results.append(dict(line.split("=", 1) for line in out.split("\n") if "=" in line))
        wall = time.time() - t0
        cpu = sum(cpu_seconds(p.pid) for p, _ in nodes) - sum(cpu0)
        pg = pg_cpu_seconds() - pg0
        prop = self.propagation(ports, gid, cid) if n > 1 else None
        for p, _ in nodes:
            p.terminate()
        for p, _ in nodes:
            p.wait(timeout=30)
        # Every generator waits for the shared backlog to drain, so the slowest one's e2e_s is
        # the time from the first request until every acknowledged task was COMPLETED.
        acked = sum(int(r.get("acknowledged", 0)) for r in results)
        e2e = max(float(r.get("e2e_s", "nan")) for r in results)
        durable = acked / e2e if e2e == e2e and e2e > 0 else 0.0
        submit = sum(float(r.get("ack_rate", 0)) for r in results)
        p50 = max(float(r.get("submit_p50_ms", 0)) for r in results)
        p99 = max(float(r.get("submit_p99_ms", 0)) for r in results)
        failed = max(int(r.get("failed", 0)) for r in results)
        completed = max(int(r.get("completed", 0)) for r in results)
        if completed != acked:
            log("   %d COMPLETED tasks for %d acknowledged registers" % (completed, acked))
        return {"nodes": n, "acknowledged": acked, "submit_per_s": submit, "p50_ms": p50,
                "p99_ms": p99, "durable_tasks_per_s": durable, "failed": failed,
                "mlrelay_cpu_s": cpu, "postgres_cpu_s": pg, "wall_s": wall,
                "propagation": prop}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-c", "--conns", type=int, default=64)
    ap.add_argument("-d", "--seconds", type=int, default=10)
    ap.add_argument("-n", "--nodes", default="1,2,3")
    ap.add_argument("--no-build", dest="build", action="store_false")
    a = ap.parse_args()
    b = Bench(a)
    rows = []
    try:
        b.setup()
        for n in [int(x) for x in a.nodes.split(",")]:
            log("-- %d node(s), %d connections, %d s of registers" % (n, a.conns, a.seconds))
            rows.append(b.measure(n))
            log("   " + json.dumps(rows[-1]))
    finally:
        b.close()
    print("nodes  submit/s  p50ms  p99ms  durable_tasks/s  failed  mlrelay_cpu_s  postgres_cpu_s"
          "  wall_s")
    for r in rows:
        print("%5d  %8.0f  %5.1f  %5.1f  %15.0f  %6d  %13.1f  %14.1f  %6.1f" % (
            r["nodes"], r["submit_per_s"], r["p50_ms"], r["p99_ms"], r["durable_tasks_per_s"],
            r["failed"], r["mlrelay_cpu_s"], r["postgres_cpu_s"], r["wall_s"]))
    for r in rows:
        if r["propagation"]:
            print("propagation with %d nodes (first node -> last node, %d changes each): %s" % (
                r["nodes"], len(r["propagation"]["settings"]), ", ".join(
                    "%s p50 %.0f ms max %.0f ms" % (k, v[len(v) // 2] * 1000, v[-1] * 1000)
                    for k, v in r["propagation"].items())))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
