"""Process lifecycle: command line, environment, config file, data directory, signals, logging,
schema migrations and crash recovery (spec README §1 and the first two bullets of §4).

Most cases use the harness server (which always passes --listen/--data-dir). The precedence cases
need full control over argv, environment and working directory, so they use RawServer below.
"""

import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import threading
import time

from harness import PG_BASE, Server, psql

SETTINGS = "/_cluster/settings"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# -- helpers ------------------------------------------------------------------------------------

class RawServer(Server):
    """An mlrelay started with exactly @argv (no forced flags), in @cwd, with an environment that
    has every MLRELAY_* variable of the outer environment removed and @env added."""

    def __init__(self, h, argv, env=None, cwd=None):
        Server.__init__(self, h, None)
        self.argv = list(argv)
        self.raw_env = dict(env or {})
        self.cwd = cwd or h.tmp
        h.servers.append(self)

    def start(self, wait=True):
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLRELAY_")}
        env.update(self.raw_env)
        self.lines = []
        self.port = None
        self.proc = subprocess.Popen([self.harness.binary] + self.argv, cwd=self.cwd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        threading.Thread(target=self._pump, args=(self.proc.stderr,), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()
        if wait:
            self.wait_listening()
        return self

    def listening(self):
        """key=value fields of the text 'listening' line."""
        with self._lock:
            line = next(l for l in self.lines if ": listening" in l)
        return dict(tok.split("=", 1) for tok in line.split() if "=" in tok)


def clean_env(extra=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("MLRELAY_")}
    e.update(extra or {})
    return e


def run(h, args, env=None, timeout=15):
    """Runs the binary to completion without any MLRELAY_* from the outer environment."""
    p = subprocess.run([h.binary] + list(args), capture_output=True, env=clean_env(env),
                       timeout=timeout, stdin=subprocess.DEVNULL, cwd=h.tmp)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def write_json(h, name, obj):
    path = os.path.join(h.tmp, name)
    with open(path, "w") as f:
        f.write(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def get_json(host, port, path):
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body)
        return json.loads(body)
    finally:
        c.close()


def flat_persistent(s):
    r = s.get(SETTINGS + "?flat_settings=true")
    assert r.status == 200, r
    return r.json["persistent"]


def max_migration(sub=""):
    files = glob.glob(os.path.join(REPO, "migrations", sub, "[0-9][0-9][0-9][0-9]_*.sql"))
    assert files, "no migrations found under %s" % REPO
    return max(int(os.path.basename(f)[:4]) for f in files)


def pg_db(s):
    """PostgreSQL mode: the name of server @s's database; None with SQLite."""
    url = s.store_url()
    return url.split("?", 1)[0].rsplit("/", 1)[1] if url else None


def schema_version(s):
    """The schema version server @s's store records: SQLite's PRAGMA user_version, or
    PostgreSQL's mlr_schema table (whose history, migrations/postgres/, ends at the same
    version)."""
    db = pg_db(s)
    if db is None:
        return db_pragma(os.path.join(s.data_dir, "mlrelay.db"), "user_version")
    assert max_migration("postgres") == max_migration()
    return int(psql("SELECT version FROM mlr_schema", db))


def db_pragma(path, pragma):
    c = sqlite3.connect(path)
    try:
        return c.execute("PRAGMA %s" % pragma).fetchone()[0]
    finally:
        c.close()


def new_lines(s, before):
    with s._lock:
        return s.lines[before:]


# -- command line -------------------------------------------------------------------------------

def test_help(h):
    rc, out, err = run(h, ["--help"])
    assert rc == 0, (rc, out, err)
    text = out + err
    for flag in ("--listen", "--data-dir", "--config", "--log-level", "--log-format",
                 "--version"):
        assert flag in text, (flag, text)
    # --help wins even when other (valid) options are present, and starts no server.
    rc, out2, _ = run(h, ["--data-dir", os.path.join(h.tmp, "d"), "--help"])
    assert rc == 0 and "--listen" in out2
    assert not os.path.exists(os.path.join(h.tmp, "d"))


def test_version(h):
    rc, out, err = run(h, ["--version"])
    assert rc == 0, (rc, out, err)
    assert "0.1.0" in out, out
    assert not os.path.exists(os.path.join(h.tmp, "data")), "--version must not create ./data"


def test_unknown_flag_exit_2(h):
    rc, out, err = run(h, ["--bogus-flag"])
    assert rc == 2, (rc, out, err)
    assert "--bogus-flag" in err, err
    assert "unknown" in err.lower() or "unrecognized" in err.lower(), err
    assert not os.path.exists(os.path.join(h.tmp, "data"))


def test_flag_missing_value_exit_2(h):
    for flag in ("--listen", "--data-dir", "--config", "--log-level", "--log-format"):
        rc, out, err = run(h, [flag])
        assert rc == 2, (flag, rc, out, err)
        assert flag in err, (flag, err)


def test_bad_flag_values_exit_2(h):
    d = os.path.join(h.tmp, "d")
    cases = [
        (["--listen", "nonsense"], "nonsense"),
        (["--listen", "127.0.0.1:99999"], "99999"),
        (["--log-level", "loud"], "loud"),
        (["--log-format", "xml"], "xml"),
    ]
    for args, word in cases:
        rc, out, err = run(h, args + ["--data-dir", d])
        assert rc == 2, (args, rc, out, err)
        assert word in err, (args, err)
    assert not os.path.exists(os.path.join(d, "mlrelay.db"))


def test_equals_form_flags(h):
    d = os.path.join(h.tmp, "eq")
    s = RawServer(h, ["--listen=127.0.0.1:0", "--data-dir=" + d]).start()
    assert os.path.isfile(os.path.join(d, "mlrelay.db"))
    assert s.get("/").status == 200
    assert s.stop() == 0


# -- config file --------------------------------------------------------------------------------

def _expect_config_error(h, content, words):
    path = write_json(h, "bad-config.json", content)
    d = os.path.join(h.tmp, "cfgdata")
    rc, out, err = run(h, ["--listen", "127.0.0.1:0", "--data-dir", d, "--config", path])
    assert rc == 2, (content, rc, out, err)
    for w in words:
        assert w in err, (content, w, err)
    assert not os.path.exists(os.path.join(d, "mlrelay.db")), content


def test_config_invalid_json(h):
    _expect_config_error(h, '{"listen": "127.0.0.1:0",', ["bad-config.json"])
    _expect_config_error(h, "[1, 2]", ["bad-config.json"])


def test_config_missing_file(h):
    path = os.path.join(h.tmp, "no-such-config.json")
    rc, out, err = run(h, ["--listen", "127.0.0.1:0", "--data-dir", os.path.join(h.tmp, "d"),
                           "--config", path])
    assert rc == 2, (rc, out, err)
    assert "no-such-config.json" in err, err


def test_config_unknown_key(h):
    _expect_config_error(h, {"http.max_conections": 5}, ["http.max_conections"])
    _expect_config_error(h, {"some_key": "x"}, ["some_key"])


def test_config_bad_node_value(h):
    _expect_config_error(h, {"http.max_connections": "abc"}, ["http.max_connections", "abc"])
    _expect_config_error(h, {"workers.threads": 0}, ["workers.threads"])
    _expect_config_error(h, {"listen": "nohostport"}, ["nohostport"])


def test_config_bad_cluster_setting(h):
    _expect_config_error(h, {"plugins.ml_commons.sync_up_job_interval_in_seconds": 100000},
                         ["plugins.ml_commons.sync_up_job_interval_in_seconds", "100000",
                          "must be <= 86400"])
    _expect_config_error(h, {"plugins.ml_commons.model_auto_deploy.enable": "maybe"},
                         ["plugins.ml_commons.model_auto_deploy.enable", "maybe"])
    _expect_config_error(h, {"plugins.ml_commons.trusted_connector_endpoints_regex":
                             ["(unclosed"]},
                         ["plugins.ml_commons.trusted_connector_endpoints_regex", "(unclosed"])


def test_config_env_var_and_flag(h):
    """MLRELAY_CONFIG is read; --config beats it."""
    good = write_json(h, "good.json", {"data_dir": os.path.join(h.tmp, "from-config")})
    bad = write_json(h, "bad.json", "{not json")
    s = RawServer(h, ["--listen", "127.0.0.1:0"], env={"MLRELAY_CONFIG": good}).start()
    assert os.path.isfile(os.path.join(h.tmp, "from-config", "mlrelay.db"))
    assert s.stop() == 0
    s2 = RawServer(h, ["--listen", "127.0.0.1:0", "--config", good],
                   env={"MLRELAY_CONFIG": bad}).start()
    assert s2.stop() == 0
    rc, out, err = run(h, ["--listen", "127.0.0.1:0"], env={"MLRELAY_CONFIG": bad})
    assert rc == 2 and "bad.json" in err, (rc, err)


# -- precedence: flag > env > config file ------------------------------------------------------

def test_precedence_data_dir_and_listen(h):
    a, b, c = (os.path.join(h.tmp, n) for n in ("dir-a", "dir-b", "dir-c"))
    cfg = write_json(h, "cfg.json", {"data_dir": a, "listen": "127.0.0.3:0"})
    env = {"MLRELAY_DATA_DIR": b, "MLRELAY_LISTEN": "127.0.0.2:0"}

    def check(argv, env, want_dir, want_host):
        s = RawServer(h, argv, env=env).start()
        info = s.listening()
        assert info.get("host") == want_host, (info, s.log())
        assert os.path.realpath(info.get("data_dir", "")) == os.path.realpath(want_dir), info
        root = get_json(want_host, s.port, "/")
        assert root["version"]["distribution"] == "mlrelay", root
        for d in (a, b, c):
            present = os.path.exists(os.path.join(d, "mlrelay.db"))
            assert present == (d == want_dir), (d, want_dir, present)
        assert s.stop() == 0
        for d in (a, b, c):
            if d != want_dir:
                assert not os.path.exists(d), "data dir %s must not be created" % d

    check(["--config", cfg, "--data-dir", c, "--listen", "127.0.0.1:0"], env, c, "127.0.0.1")
    shutil.rmtree(c)
    check(["--config", cfg], env, b, "127.0.0.2")
    shutil.rmtree(b)
    check(["--config", cfg], {}, a, "127.0.0.3")


def test_default_data_dir_is_dot_data(h):
    cwd = os.path.join(h.tmp, "wd")
    os.mkdir(cwd)
    s = RawServer(h, ["--listen", "127.0.0.1:0"], cwd=cwd).start()
    d = os.path.join(cwd, "data")
    assert os.path.isfile(os.path.join(d, "mlrelay.db")), os.listdir(cwd)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, oct(os.stat(d).st_mode)
    assert s.stop() == 0


# -- data directory -----------------------------------------------------------------------------

def test_data_dir_created_0700(h):
    d = os.path.join(h.tmp, "x", "y", "data")
    s = h.server(data_dir=d)
    st = os.stat(d)
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
    # The database lives in the data dir, unless the store is PostgreSQL.
    assert os.path.isfile(os.path.join(d, "mlrelay.db")) == (PG_BASE is None), os.listdir(d)
    assert os.path.isfile(os.path.join(d, "node.id"))
    assert s.stop() == 0


def test_node_id_stable(h):  # slow
    s = h.server()
    path = os.path.join(s.data_dir, "node.id")
    with open(path) as f:
        first = f.read().strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", first), first
    assert "node_id=" + first in s.log(), s.log()
    st1 = os.stat(path)
    assert s.stop() == 0
    s.start()
    with open(path) as f:
        second = f.read().strip()
    assert second == first
    st2 = os.stat(path)
    assert (st2.st_ino, st2.st_mtime_ns) == (st1.st_ino, st1.st_mtime_ns), "node.id rewritten"
    assert "node_id=" + first in s.log()
    s.restart()  # after kill -9 as well
    with open(path) as f:
        assert f.read().strip() == first
    # A second data dir gets a different node id.
    s2 = h.server()
    with open(os.path.join(s2.data_dir, "node.id")) as f:
        assert f.read().strip() != first


# -- signals ------------------------------------------------------------------------------------

def _graceful(h, sig, name):
    s = h.server()
    assert s.get("/").status == 200
    before = len(s.lines)
    t0 = time.time()
    rc = s.stop(sig, timeout=10)
    assert rc == 0, (rc, s.log())
    assert time.time() - t0 < 10
    time.sleep(0.1)  # let the pump threads drain the last lines
    lines = new_lines(s, before)
    assert any(name in l or "stop" in l.lower() for l in lines), lines


def test_sigterm_exit_0(h):
    _graceful(h, signal.SIGTERM, "SIGTERM")


def test_sigint_exit_0(h):
    _graceful(h, signal.SIGINT, "SIGINT")


def test_sigterm_with_idle_keepalive_connection(h):
    """An idle keep-alive client must not hold the process past the 10 s stop budget."""
    s = h.server()
    sock = s.socket()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    sock.settimeout(5)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    t0 = time.time()
    s.proc.send_signal(signal.SIGTERM)
    rc = s.wait_exit(timeout=10)
    assert rc == 0, rc
    assert time.time() - t0 < 10
    sock.close()


def test_settings_survive_graceful_stop(h):
    s = h.server()
    r = s.put(SETTINGS, {"persistent": {"plugins.ml_commons.model_auto_deploy.enable": False}})
    assert r.status == 200, r
    assert s.stop(signal.SIGINT) == 0
    s.start()
    assert flat_persistent(s).get("plugins.ml_commons.model_auto_deploy.enable") == "false"


# -- logging ------------------------------------------------------------------------------------

def test_log_format_json(h):
    s = h.server(args=["--log-format", "json"])
    assert s.get("/").status == 200
    assert s.put(SETTINGS, {"persistent": {"x.y": 1}}).status == 400
    assert s.stop() == 0
    time.sleep(0.1)
    lines = [l for l in s.lines if l.strip()]
    assert len(lines) >= 2, lines
    for l in lines:
        obj = json.loads(l)
        assert isinstance(obj, dict), l
        for k in ("ts", "level", "comp", "msg"):
            assert isinstance(obj.get(k), str) and obj[k], (k, l)
        assert obj["level"] in ("debug", "info", "warn", "error"), l
    listening = [json.loads(l) for l in lines if json.loads(l)["msg"] == "listening"]
    assert len(listening) == 1 and int(listening[0]["port"]) == s.port, lines


def test_log_format_from_config_and_flag_wins(h):
    cfg = {"log.format": "json"}
    s = h.server(config=cfg)
    assert all(l.startswith("{") for l in s.lines if l.strip()), s.log()
    assert s.stop() == 0
    s2 = h.server(config=cfg, args=["--log-format", "text"])
    assert any(": listening" in l for l in s2.lines), s2.log()
    assert not any(l.startswith("{") for l in s2.lines), s2.log()
    assert s2.stop() == 0


# -- migrations ---------------------------------------------------------------------------------

def test_fresh_db_at_newest_schema(h):
    s = h.server()
    assert s.stop() == 0
    assert schema_version(s) == max_migration()
    if pg_db(s) is None:
        db = os.path.join(s.data_dir, "mlrelay.db")
        assert str(db_pragma(db, "journal_mode")).lower() == "wal"


def test_restart_keeps_data(h):
    s = h.server()
    uuid = s.get("/").json["cluster_uuid"]
    assert isinstance(uuid, str) and uuid
    body = {"persistent": {"plugins.ml_commons.sync_up_job_interval_in_seconds": 7,
                           "plugins.ml_commons.some_unknown_key": "kept"}}
    assert s.put(SETTINGS, body).status == 200
    assert s.stop() == 0
    v = schema_version(s)
    s.start()
    assert s.get("/").json["cluster_uuid"] == uuid
    p = flat_persistent(s)
    assert p.get("plugins.ml_commons.sync_up_job_interval_in_seconds") == "7", p
    assert p.get("plugins.ml_commons.some_unknown_key") == "kept", p
    assert s.stop() == 0
    assert schema_version(s) == v == max_migration()


def test_newer_schema_refused(h):
    s = h.server()
    assert s.stop() == 0
    db = pg_db(s)
    args = ["--listen", "127.0.0.1:0", "--data-dir", s.data_dir]
    if db is None:
        c = sqlite3.connect(os.path.join(s.data_dir, "mlrelay.db"))
        c.execute("PRAGMA user_version = 999")
        c.commit()
        c.close()
    else:
        psql("UPDATE mlr_schema SET version = 999", db)
        args += ["--store", s.store_url()]
    rc, out, err = run(h, args)
    assert rc == 1, (rc, out, err)
    assert "newer" in err.lower(), err
    assert "listening" not in err, err
    assert schema_version(s) == 999, "a refused database must not be touched"


def test_port_in_use_exit_1(h):
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        rc, out, err = run(h, ["--listen", "127.0.0.1:%d" % port, "--data-dir",
                               os.path.join(h.tmp, "d")], timeout=10)
    finally:
        blocker.close()
    assert rc == 1, (rc, out, err)
    assert str(port) in err, err
    assert "in use" in err.lower() or "eaddrinuse" in err.lower(), err


# -- crash recovery -----------------------------------------------------------------------------

def test_kill9_keeps_acknowledged_settings(h):  # slow
    s = h.server()
    uuid = s.get("/").json["cluster_uuid"]
    for i in range(200):
        r = s.put(SETTINGS, {"persistent": {"plugins.ml_commons.crash_k%03d" % i: i}})
        assert r.status == 200, (i, r)
    s.kill9()
    s.start()
    p = flat_persistent(s)
    missing = [i for i in range(200) if p.get("plugins.ml_commons.crash_k%03d" % i) != str(i)]
    assert not missing, "acknowledged keys lost after kill -9: %s" % missing[:20]
    assert s.get("/").json["cluster_uuid"] == uuid
    # The recovered database still takes writes and keeps them.
    assert s.put(SETTINGS, {"persistent": {"plugins.ml_commons.after": "x"}}).status == 200
    assert s.stop() == 0
    s.start()
    assert flat_persistent(s).get("plugins.ml_commons.after") == "x"


def test_kill9_concurrent_puts(h):  # slow
    s = h.server()
    port = s.port
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(tid):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for i in range(100000):
                if stop.is_set():
                    return
                key = "plugins.ml_commons.cc_t%d_%05d" % (tid, i)
                body = json.dumps({"persistent": {key: "v%d_%d" % (tid, i)}})
                c.request("PUT", SETTINGS, body=body,
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    with lock:
                        acked.append((key, "v%d_%d" % (tid, i)))
        except (OSError, http.client.HTTPException):
            return  # the server was killed
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    deadline = time.time() + 15
    while time.time() < deadline:
        with lock:
            if len(acked) >= 500:
                break
        time.sleep(0.005)
    s.kill9()  # mid-stream: writers are still sending
    stop.set()
    for t in threads:
        t.join(10)
    with lock:
        got = list(acked)
    assert len(got) >= 50, "too few PUTs acknowledged before the kill: %d" % len(got)
    s.start()
    p = flat_persistent(s)
    lost = [(k, v) for k, v in got if p.get(k) != v]
    assert not lost, "%d of %d acknowledged keys lost, e.g. %s" % (len(lost), len(got), lost[:5])
