"""Operations (issue #9 parts 3 and 4): the access log, task and model ids on task log lines,
`mlrelay backup DEST` taken while clients write, `mlrelay check`, and their exit codes.

Log lines are read from the server's stderr as the harness collects it; JSON format is used
where fields are compared, so each field is checked by name rather than by position.
"""

import http.client
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import time

from harness import pg_only, psql, sqlite_only

ML = "/_plugins/_ml"
SETTINGS = "/_cluster/settings"
TRUSTED = "plugins.ml_commons.trusted_connector_endpoints_regex"
DURATION = re.compile(r"^\d+\.\d{3}$")


# -- helpers ----------------------------------------------------------------------------------

def clean_env(extra=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MLRELAY_")}
    e.update(extra or {})
    return e


def run(h, args, env=None, timeout=60):
    """Runs the binary to completion (no MLRELAY_* from outside); returns (code, out, err)."""
    p = subprocess.run([h.binary] + list(args), capture_output=True, env=clean_env(env),
                       timeout=timeout, stdin=subprocess.DEVNULL, cwd=h.tmp)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def json_lines(s):
    out = []
    with s._lock:
        lines = list(s.lines)
    for l in lines:
        if l.startswith("{"):
            out.append(json.loads(l))
    return out


def wait_lines(s, pred, count=1, timeout=5.0):
    """Waits until @count JSON log lines satisfy @pred; returns them."""
    deadline = time.time() + timeout
    found = []
    while time.time() < deadline:
        found = [o for o in json_lines(s) if pred(o)]
        if len(found) >= count:
            return found
        time.sleep(0.02)
    raise AssertionError("expected %d matching log lines, got %d:\n%s"
                         % (count, len(found), s.log()))


def access_lines(s):
    return [o for o in json_lines(s) if o.get("comp") == "access"]


def make_connector(s):
    r = s.put(SETTINGS, {"persistent": {TRUSTED: ["^http://127\\.0\\.0\\.1:.*$"]}})
    assert r.status == 200, r
    body = {"name": "ops connector", "version": "1", "protocol": "http",
            "parameters": {"model": "m"}, "credential": {"key": "sk-ops-secret"},
            "actions": [{"action_type": "predict", "method": "POST",
                         "url": "http://127.0.0.1:9/v1/x",
                         "headers": {"Authorization": "Bearer ${credential.key}"},
                         "request_body": "{ \"input\": \"${parameters.input}\" }"}]}
    r = s.post(ML + "/connectors/_create", body)
    assert r.status == 200, r
    return r.json["connector_id"]


def register(s, cid, name):
    r = s.post(ML + "/models/_register",
               {"name": name, "function_name": "remote", "connector_id": cid})
    assert r.status == 200, r
    return r.json


def wait_task(s, tid, state="COMPLETED", timeout=10.0):
    deadline = time.time() + timeout
    doc = None
    while time.time() < deadline:
        r = s.get(ML + "/tasks/" + tid)
        if r.status == 200:
            doc = r.json
            if doc.get("state") in ("COMPLETED", "FAILED", "CANCELLED"):
                break
        time.sleep(0.02)
    assert doc is not None and doc.get("state") == state, (tid, doc)
    return doc


def check_fields(out):
    """`key: value` lines of `mlrelay check` output."""
    fields = {}
    for line in out.splitlines():
        k, sep, v = line.partition(": ")
        if sep:
            fields[k] = v
    return fields


# -- access log ---------------------------------------------------------------------------------

def test_access_log_fields(h):
    s = h.server(args=["--log-format", "json"])
    r = s.get("/?pretty&token=supersecret-in-query", headers={"X-Opaque-Id": "ops-trace-42"})
    assert r.status == 200, r
    assert r.headers["x-opaque-id"] == "ops-trace-42", r.headers  # echoed, as OpenSearch does
    assert "x-opaque-id" not in s.get("/").headers
    line = wait_lines(s, lambda o: o.get("comp") == "access" and
                      o.get("opaque_id") == "ops-trace-42")[0]
    assert line["level"] == "info" and line["msg"] == "request", line
    assert line["method"] == "GET", line
    assert line["path"] == "/", line
    assert line["status"] == "200", line
    assert int(line["bytes"]) == len(r.body), (line, len(r.body))
    assert DURATION.match(line["duration_ms"]), line
    assert float(line["duration_ms"]) < 5000, line
    assert line["client"] == "127.0.0.1", line
    # Requests without X-Opaque-Id get no opaque_id field; errors and HEAD are logged too.
    assert s.get("/no/such/path?secret=abc").status == 400
    assert s.request("HEAD", "/").status == 200
    lines = wait_lines(s, lambda o: o.get("comp") == "access", count=3)
    bad = [o for o in lines if o["path"] == "/no/such/path"]
    assert len(bad) == 1 and bad[0]["status"] == "400" and "opaque_id" not in bad[0], lines
    head = [o for o in lines if o["method"] == "HEAD"]
    assert len(head) == 1 and head[0]["bytes"] == "0" and head[0]["status"] == "200", lines
    # Nothing of a query string reaches the log, whatever the line.
    text = s.log()
    assert "supersecret-in-query" not in text and "secret=abc" not in text, text
    assert "pretty" not in "".join(o["path"] for o in lines), lines
    # Hostile header values are escaped: they cannot break the line or forge fields.
    tricky = 'q"uote\\back","status":"999'
    assert s.get("/", headers={"X-Opaque-Id": tricky}).status == 200
    line = wait_lines(s, lambda o: o.get("comp") == "access" and o.get("opaque_id") == tricky)[0]
    assert line["status"] == "200", line


def test_access_log_text_format_and_connection_errors(h):
    s = h.server(config={"http.max_content_length": "1kb"})
    r = s.get("/", headers={"X-Opaque-Id": "text id"})
    assert r.status == 200
    # A body over the limit is answered at the connection level (413), and still logged.
    r = s.post(ML + "/model_groups/_register", "x" * 4096)
    assert r.status == 413, r
    deadline = time.time() + 5
    while time.time() < deadline:
        lines = [l for l in s.log().splitlines() if " INFO access: request " in l]
        if len(lines) >= 2:
            break
        time.sleep(0.02)
    assert len(lines) == 2, s.log()
    assert re.search(r'method=GET path=/ status=200 bytes=\d+ duration_ms=\d+\.\d{3} '
                     r'client=127\.0\.0\.1 opaque_id="text id"$', lines[0]), lines[0]
    assert re.search(r"method=POST path=/_plugins/_ml/model_groups/_register status=413 ",
                     lines[1]), lines[1]


def test_access_log_off(h):
    cases = [
        dict(args=["--access-log", "false"]),
        dict(args=["--access-log=false"]),
        dict(env={"MLRELAY_ACCESS_LOG": "false"}),
        dict(config={"log.access": False}),
        dict(config={"log.access": "false"}),
    ]
    for kw in cases:
        s = h.server(**kw)
        for _ in range(3):
            assert s.get("/", headers={"X-Opaque-Id": "off"}).status == 200
        assert s.stop() == 0, kw
        assert " access: " not in s.log(), (kw, s.log())
    # Precedence: a flag beats the environment, which beats the config file.
    s = h.server(config={"log.access": False}, env={"MLRELAY_ACCESS_LOG": "true"})
    assert s.get("/").status == 200
    s2 = h.server(env={"MLRELAY_ACCESS_LOG": "false"}, args=["--access-log", "true"])
    assert s2.get("/").status == 200
    for srv in (s, s2):
        deadline = time.time() + 5
        while " access: request" not in srv.log() and time.time() < deadline:
            time.sleep(0.02)
        assert " access: request" in srv.log(), srv.log()
    # A value that is not a boolean is a usage error.
    d = os.path.join(h.tmp, "bad")
    for args, env in ((["--access-log", "maybe"], None), ([], {"MLRELAY_ACCESS_LOG": "off"})):
        rc, out, err = run(h, ["--listen", "127.0.0.1:0", "--data-dir", d] + args, env=env)
        assert rc == 2, (args, env, rc, out, err)
        assert "log.access" in err, err
    assert not os.path.exists(d)


# -- task and model ids on task log lines -------------------------------------------------------

def test_task_log_lines_carry_ids(h):
    s = h.server(args=["--log-format", "json", "--log-level", "debug"])
    cid = make_connector(s)
    reg = register(s, cid, "ops ids model")
    tid, mid = reg["task_id"], reg["model_id"]
    wait_task(s, tid)
    r = s.post(ML + "/models/%s/_deploy" % mid)
    assert r.status == 200, r
    dtid = r.json["task_id"]
    wait_task(s, dtid)
    for task, ttype in ((tid, "REGISTER_MODEL"), (dtid, "DEPLOY_MODEL")):
        lines = wait_lines(s, lambda o, t=task: o.get("task_id") == t, count=2)
        msgs = {o["msg"] for o in lines}
        assert {"task started", "task finished"} <= msgs, lines
        for o in lines:
            assert o["model_id"] == mid, o
            assert o.get("task_type", ttype) == ttype, o
        done = [o for o in lines if o["msg"] == "task finished"][0]
        assert done["state"] == "COMPLETED", done
    # Recovery: a task left RUNNING by a dead process is re-queued with its ids in the log.
    assert s.stop() == 0
    url = s.store_url()
    if url is None:
        c = sqlite3.connect(os.path.join(s.data_dir, "mlrelay.db"))
        c.execute("UPDATE tasks SET state = 'RUNNING', doc = json_set(doc, '$.state', 'RUNNING') "
                  "WHERE id = ?", (dtid,))
        c.commit()
        c.close()
    else:  # ids are [A-Za-z0-9_-]: safe to quote
        psql("UPDATE tasks SET state = 'RUNNING', doc = jsonb_set(doc::jsonb, '{state}', "
             "'\"RUNNING\"')::text WHERE id = '%s'" % dtid,
             url.split("?", 1)[0].rsplit("/", 1)[1])
    s.start()
    line = wait_lines(s, lambda o: o.get("task_id") == dtid and "re-queued" in o["msg"])[0]
    assert line["model_id"] == mid and line["task_type"] == "DEPLOY_MODEL", line
    wait_task(s, dtid)


def test_failed_task_logged_with_ids_at_default_level(h):
    s = h.server(args=["--log-format", "json"])
    cid = make_connector(s)
    reg = register(s, cid, "ops failing model")
    wait_task(s, reg["task_id"])
    # An async predict against a port where nothing listens fails its PREDICTION task.
    r = s.post(ML + "/models/%s/_predict?async=true" % reg["model_id"],
               {"parameters": {"input": "x"}})
    assert r.status == 200, r
    ptid = r.json["task_id"]
    wait_task(s, ptid, state="FAILED")
    line = wait_lines(s, lambda o: o.get("task_id") == ptid and o["msg"] == "task finished")[0]
    assert line["level"] == "warn", line
    assert line["model_id"] == reg["model_id"], line
    assert line["state"] == "FAILED" and line["task_type"] == "PREDICTION", line
    assert line.get("error"), line
    assert "sk-ops-secret" not in s.log()


def test_ttl_undeploy_logged_with_its_task_id(h):
    s = h.server(args=["--log-format", "json"])
    cid = make_connector(s)
    r = s.post(ML + "/models/_register",
               {"name": "ops ttl model", "function_name": "remote", "connector_id": cid,
                "deploy_setting": {"model_ttl_minutes": 0.02}})  # 1.2 s
    assert r.status == 200, r
    mid = r.json["model_id"]
    wait_task(s, r.json["task_id"])
    r = s.post(ML + "/models/%s/_deploy" % mid)
    assert r.status == 200 and r.json["status"] == "COMPLETED", r
    line = wait_lines(s, lambda o: o.get("model_id") == mid and "TTL" in o["msg"], timeout=10)[0]
    r = s.post(ML + "/tasks/_search", {"query": {"bool": {"filter": [
        {"term": {"model_id": mid}}, {"term": {"task_type": "UNDEPLOY_MODEL"}}]}}})
    assert r.status == 200 and r.json["hits"]["total"]["value"] == 1, r
    assert line["task_id"] == r.json["hits"]["hits"][0]["_id"], (line, r)


# -- backup ---------------------------------------------------------------------------------------

class Writers:
    """Threads registering models as fast as the server acknowledges them, each on its own
    keep-alive connection. Every acknowledged model id is recorded with the monotonic time its
    response arrived."""

    def __init__(self, port, cid, threads=4):
        self.port = port
        self.cid = cid
        self.acked = []            # (time, model_id)
        self.errors = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.loop, args=(i,), daemon=True)
                        for i in range(threads)]

    def loop(self, n):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        i = 0
        try:
            while not self.stop.is_set():
                i += 1
                body = json.dumps({"name": "w%d-%d" % (n, i), "function_name": "remote",
                                   "connector_id": self.cid})
                c.request("POST", ML + "/models/_register", body=body,
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
                if r.status != 200:
                    self.errors.append((r.status, data))
                    return
                mid = json.loads(data)["model_id"]
                with self.lock:
                    self.acked.append((time.monotonic(), mid))
        except Exception as e:  # reported by the test, not lost in a thread
            self.errors.append(repr(e))
        finally:
            c.close()

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not self.errors, self.errors[:3]

    def count(self):
        with self.lock:
            return len(self.acked)


def test_backup_while_writing(h):  # slow
    sqlite_only("mlrelay backup copies the SQLite database")
    s = h.server()
    cid = make_connector(s)
    # Some bulk first (about 8 MiB), so the copy takes many steps while the writers write.
    for i in range(32):
        r = s.post(ML + "/model_groups/_register",
                   {"name": "bulk-%d" % i, "description": ("%08d" % i) * 32768})
        assert r.status == 200, r
    w = Writers(s.port, cid)
    w.start()
    deadline = time.time() + 20
    while w.count() < 300 and time.time() < deadline:
        time.sleep(0.05)
    assert w.count() >= 300, (w.count(), w.errors)
    dest = os.path.join(h.tmp, "backup", "mlrelay.db")
    os.makedirs(os.path.dirname(dest))
    started = time.monotonic()
    rc, out, err = run(h, ["backup", dest, "--data-dir", s.data_dir])
    ended = time.monotonic()
    after = w.count()
    time.sleep(0.3)  # the server keeps acknowledging writes after the backup, too
    w.finish()
    assert rc == 0, (rc, out, err)
    assert len(out.strip().splitlines()) == 1, out
    assert "written to " + dest in out and "pages" in out, out
    steps = int(re.search(r"(\d+) steps", out).group(1))
    assert steps >= 4, out
    assert w.count() > after, "writes stalled after the backup"
    during = [mid for t, mid in w.acked if started <= t <= ended]
    assert during, "no write was acknowledged while the backup ran"
    assert not os.path.exists(dest + ".tmp")
    assert oct(os.stat(dest).st_mode & 0o777) == "0o600"
    before = {mid for t, mid in w.acked if t < started}
    every = {mid for _, mid in w.acked}
    c = sqlite3.connect(dest)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        in_copy = {row[0] for row in c.execute("SELECT id FROM models")}
        tasks = {row[0] for row in c.execute("SELECT model_id FROM tasks "
                                             "WHERE task_type = 'REGISTER_MODEL'")}
    finally:
        c.close()
    missing = before - in_copy
    assert not missing, ("acknowledged before the backup but missing", len(missing))
    assert in_copy <= every, "rows no writer was told about"
    assert in_copy <= tasks, "a model without its register task: not one transaction's snapshot"
    # Restore: the copy is a data directory's database that a server serves as it was.
    restored = h.server(data_dir=os.path.dirname(dest))
    some = sorted(before)[:5]
    for mid in some:
        assert restored.get(ML + "/models/" + mid).status == 200, mid
    r = restored.post(ML + "/models/_search", {"query": {"match_all": {}}, "size": 0})
    assert r.status == 200 and r.json["hits"]["total"]["value"] == len(in_copy), r
    print("backup: %s; %d writes acknowledged in all, %d before it started, %d while it ran"
          % (out.strip(), len(every), len(before), len(during)))


def test_backup_errors(h):
    sqlite_only("mlrelay backup copies the SQLite database")
    s = h.server()
    db = os.path.join(s.data_dir, "mlrelay.db")
    # No database in the data directory: exit 1, and nothing is created.
    missing = os.path.join(h.tmp, "nodata")
    dest = os.path.join(h.tmp, "out.db")
    rc, out, err = run(h, ["backup", dest, "--data-dir", missing])
    assert rc == 1, (rc, out, err)
    assert "backup failed" in err and missing in err, err
    assert not os.path.exists(missing) and not os.path.exists(dest)
    # The destination is a directory, or the live database itself, or in a missing directory.
    for bad, word in ((h.tmp, "directory"), (db, "database itself"),
                      (os.path.join(h.tmp, "no", "dir", "x.db"), "x.db.tmp")):
        rc, out, err = run(h, ["backup", bad, "--data-dir", s.data_dir])
        assert rc == 1, (bad, rc, out, err)
        assert word in err, (bad, err)
    assert s.get("/").status == 200  # the server never noticed
    # The data directory comes from the environment and the config file as for the server.
    rc, out, err = run(h, ["backup", dest], env={"MLRELAY_DATA_DIR": s.data_dir})
    assert rc == 0 and os.path.exists(dest), (rc, out, err)
    cfg = os.path.join(h.tmp, "cfg.json")
    with open(cfg, "w") as f:
        json.dump({"data_dir": s.data_dir}, f)
    dest2 = os.path.join(h.tmp, "out2.db")
    rc, out, err = run(h, ["backup", dest2, "--config", cfg])
    assert rc == 0 and os.path.exists(dest2), (rc, out, err)


# -- check ---------------------------------------------------------------------------------------

def test_check_output_and_exit_codes(h):
    sqlite_only("mlrelay check reads the SQLite database")
    s = h.server()
    cid = make_connector(s)
    a = register(s, cid, "ops check a")
    b = register(s, cid, "ops check b")
    wait_task(s, a["task_id"])
    wait_task(s, b["task_id"])
    r = s.post(ML + "/models/%s/_deploy" % a["model_id"])
    assert r.status == 200 and r.json["status"] == "COMPLETED", r
    # While the server runs.
    rc, out, err = run(h, ["check", "--data-dir", s.data_dir])
    assert rc == 0, (rc, out, err)
    f = check_fields(out)
    assert f["integrity"] == "ok", out
    assert f["schema version"].startswith("%s (this mlrelay: " % f["schema version"].split()[0])
    assert f["model groups"] == "2", out
    assert f["connectors"] == "1", out
    assert f["models"] == "2 (DEPLOYED 1, REGISTERED 1)", out
    assert f["tasks"] == "3 (COMPLETED 3)", out
    assert f["models stored DEPLOYED (redeployed at start)"] == "1", out
    assert f["result"] == "ok", out
    assert s.get("/").status == 200

    # A truncated copy (made from a backup, so the live files are never touched) fails.
    copy = os.path.join(h.tmp, "copy", "mlrelay.db")
    os.makedirs(os.path.dirname(copy))
    rc, out, err = run(h, ["backup", copy, "--data-dir", s.data_dir])
    assert rc == 0, (rc, out, err)
    size = os.path.getsize(copy)
    assert size >= 8 * 4096, size
    with open(copy, "r+b") as fh:
        fh.truncate(size // 2)
    rc, out, err = run(h, ["check", "--data-dir", os.path.dirname(copy)])
    assert rc == 1, (rc, out, err)
    assert check_fields(out)["result"].startswith("failed"), out
    assert "check failed" in err, err

    # Not a database; a database from a newer mlrelay; no database at all.
    junk = os.path.join(h.tmp, "junk")
    os.makedirs(junk)
    with open(os.path.join(junk, "mlrelay.db"), "wb") as fh:
        fh.write(b"this is not an SQLite database " * 400)
    rc, out, err = run(h, ["check", "--data-dir", junk])
    assert rc == 1 and "not a database" in err, (rc, out, err)
    newer = os.path.join(h.tmp, "newer")
    os.makedirs(newer)
    shutil.copy(_fresh_backup(h, s), os.path.join(newer, "mlrelay.db"))
    c = sqlite3.connect(os.path.join(newer, "mlrelay.db"))
    c.execute("PRAGMA user_version = 999")
    c.commit()
    c.close()
    rc, out, err = run(h, ["check", "--data-dir", newer])
    assert rc == 1, (rc, out, err)
    assert check_fields(out)["integrity"] == "ok" and "newer" in out, out
    nothing = os.path.join(h.tmp, "nothing")
    rc, out, err = run(h, ["check", "--data-dir", nothing])
    assert rc == 1 and not os.path.exists(nothing), (rc, out, err)


def _fresh_backup(h, s):
    dest = os.path.join(h.tmp, "fresh-%d.db" % time.monotonic_ns())
    rc, out, err = run(h, ["backup", dest, "--data-dir", s.data_dir])
    assert rc == 0, (rc, out, err)
    return dest


# -- usage ---------------------------------------------------------------------------------------

def test_backup_and_check_refuse_postgresql(h):
    """With the store in PostgreSQL, backup and check point at PostgreSQL's own tools."""
    pg_only()
    s = h.server()
    for args, tool in ((["backup", os.path.join(h.tmp, "out.db")], "pg_dump"),
                       (["check"], "pg_amcheck")):
        rc, out, err = run(h, args + ["--data-dir", s.data_dir, "--store", s.store_url()])
        assert rc == 2 and tool in err, (args, rc, out, err)
    assert not os.path.exists(os.path.join(h.tmp, "out.db"))
    assert s.get("/").status == 200


def test_usage_errors_exit_2(h):
    d = os.path.join(h.tmp, "d")
    cases = [
        (["backup"], "DEST"),
        (["backup", "a.db", "b.db"], "b.db"),
        (["check", "extra"], "extra"),
        (["frobnicate"], "frobnicate"),
        (["backup", "x.db", "--data-dir"], "--data-dir"),
        (["check", "--bogus"], "--bogus"),
    ]
    for args, word in cases:
        rc, out, err = run(h, args + (["--data-dir", d] if "--data-dir" not in args else []))
        assert rc == 2, (args, rc, out, err)
        assert word in err, (args, err)
        assert "--help" in err, err
    assert not os.path.exists(d)
    assert not os.path.exists(os.path.join(h.tmp, "a.db"))
    rc, out, err = run(h, ["--help"])
    assert rc == 0
    for word in ("backup DEST", "check", "--access-log", "MLRELAY_ACCESS_LOG"):
        assert word in out, (word, out)
    rc, out, err = run(h, ["backup", "--help"])
    assert rc == 0 and "backup DEST" in out, (rc, out, err)


# -- master key ----------------------------------------------------------------------------------

def test_lost_master_key_then_credentials_set_again(h):
    s = h.server(args=["--log-format", "json"])
    cid = make_connector(s)
    reg = register(s, cid, "ops key model")
    wait_task(s, reg["task_id"])
    mid = reg["model_id"]
    r = s.post(ML + "/models/%s/_deploy" % mid)
    assert r.status == 200 and r.json["status"] == "COMPLETED", r
    assert s.stop() == 0
    os.unlink(os.path.join(s.data_dir, "master.key"))  # lost: a new key is made at start
    s.start()
    # The model stored DEPLOYED cannot be redeployed; the log says which one and why.
    line = wait_lines(s, lambda o: o.get("msg") == "model not redeployed")[0]
    assert line["model_id"] == mid and "decrypt" in line["error"], line
    r = s.post(ML + "/models/%s/_deploy" % mid)
    assert r.status == 200, r
    doc = wait_task(s, r.json["task_id"], state="FAILED")
    assert "cannot decrypt credential" in doc["error"], doc
    assert s.get(ML + "/models/" + mid).json["model_state"] == "DEPLOY_FAILED"
    # Setting the credential again seals it under the new key; the deploy then works.
    r = s.put(ML + "/connectors/" + cid, {"credential": {"key": "sk-ops-new-secret"}})
    assert r.status == 200, r
    r = s.post(ML + "/models/%s/_deploy" % mid)
    assert r.status == 200 and r.json["status"] == "COMPLETED", r
    assert s.get(ML + "/models/" + mid).json["model_state"] == "DEPLOYED"
    assert "sk-ops-new-secret" not in s.log() and "sk-ops-secret" not in s.log()
