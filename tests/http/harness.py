"""Black-box test harness: starts the real mlrelay binary on 127.0.0.1 and talks HTTP to it.

Every test gets a fresh temporary directory. Servers listen on port 0 (any free port); the
harness learns the port from the "listening" log line. Only the Python standard library is used,
so the tests run on a fresh Debian machine with nothing but python3.
"""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time


# PostgreSQL mode: with MLRELAY_TEST_PG set to a base URL (scripts/pg-cluster prints one), every
# server the tests start keeps its state in its own PostgreSQL database instead of SQLite, tied to
# its data directory so a restart finds its state again. ctest runs the whole suite this way as
# pg.<file>.<name> (tests/CMakeLists.txt).
PG_BASE = os.environ.get("MLRELAY_TEST_PG") or None
SKIP = 77  # runner.py's exit code for a skipped case (ctest SKIP_RETURN_CODE)


class Skip(Exception):
    """Raised by a test that does not apply in this mode; runner.py reports it as skipped."""


def sqlite_only(why):
    """Skips the test under PostgreSQL: it reads or damages SQLite's files, or runs a command that
    works on them only (backup, check)."""
    if PG_BASE:
        raise Skip("SQLite store only: " + why)


def pg_only():
    """Skips the test unless the suite runs against PostgreSQL (multi-node tests)."""
    if not PG_BASE:
        raise Skip("needs PostgreSQL (MLRELAY_TEST_PG)")


def pg_url(dbname):
    """The URL of database @dbname on the test cluster."""
    base = PG_BASE.split("?", 1)
    head = base[0].rsplit("/", 1)[0]
    return head + "/" + dbname + ("?" + base[1] if len(base) > 1 else "")


def psql(sql, dbname="postgres"):
    """Runs @sql on the test cluster and returns its output (unaligned, tuples only)."""
    p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d",
                        pg_url(dbname), "-c", sql], capture_output=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError("psql failed: %s" % p.stderr.decode())
    return p.stdout.decode()


def pg_create(dbname):
    if psql("SELECT 1 FROM pg_database WHERE datname = '%s'" % dbname).strip() != "1":
        psql("CREATE DATABASE %s" % dbname)


class Response:
    """One HTTP response: status, lower-cased headers, raw body and parsed JSON (or None)."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return "Response(%d, %r)" % (self.status, self.body[:500])

    def error(self):
        """(type, reason) of an OpenSearch error envelope; asserts the envelope shape."""
        j = self.json
        assert isinstance(j, dict) and "error" in j and "status" in j, self
        assert j["status"] == self.status, self
        err = j["error"]
        assert err["root_cause"][0]["type"] == err["type"], self
        assert err["root_cause"][0]["reason"] == err["reason"], self
        return err["type"], err["reason"]


class Server:
    """A running mlrelay process."""

    def __init__(self, harness, data_dir, args=(), env=None, config=None):
        self.harness = harness
        self.data_dir = data_dir
        self.args = list(args)
        self.env = env or {}
        self.config = config
        self.proc = None
        self.port = None
        self.lines = []
        self._lock = threading.Lock()
        self._conn = None
        self.pg_db = None

    # -- process control -------------------------------------------------------------------
    def start(self, wait=True):
        cmd = [self.harness.binary, "--listen", "127.0.0.1:0", "--data-dir", self.data_dir]
        store = self.store_url()
        if store and "--store" not in self.args and "MLRELAY_STORE" not in self.env:
            cmd += ["--store", store]
        if self.config is not None:
            path = os.path.join(self.harness.tmp, "config-%d.json" % id(self))
            with open(path, "w") as f:
                json.dump(self.config, f)
            cmd += ["--config", path]
        cmd += self.args
        env = dict(os.environ)
        env.update(self.env)
        self.lines = []
        self.port = None
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self._pumps = [threading.Thread(target=self._pump, args=(stream,), daemon=True)
                       for stream in (self.proc.stderr, self.proc.stdout)]
        for t in self._pumps:
            t.start()
        if wait:
            self.wait_listening()
        return self

    def store_url(self):
        """PostgreSQL mode: the URL of this server's database (created on first use), else
        None. Servers given the same `pg_db` share one database, as nodes of a cluster."""
        if not PG_BASE:
            return None
        name = self.pg_db or "mlrt_" + hashlib.sha1(self.data_dir.encode()).hexdigest()[:24]
        if name not in self.harness.pg_dbs:
            pg_create(name)
            self.harness.pg_dbs.append(name)
        return pg_url(name)

    def _pump(self, stream):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.lines.append(line)
                if self.port is None and (": listening" in line or '"msg":"listening"' in line):
                    self.port = _port_from_line(line)
        stream.close()

    def wait_listening(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                if self.port is not None:
                    return self.port
            if self.proc.poll() is not None:
                raise AssertionError("mlrelay exited with %s before listening:\n%s"
                                     % (self.proc.returncode, self.log()))
            time.sleep(0.01)
        raise AssertionError("mlrelay did not start listening:\n" + self.log())

    def log(self):
        with self._lock:
            return "\n".join(self.lines)

    def wait_exit(self, timeout=15):
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("mlrelay did not exit within %ss:\n%s" % (timeout, self.log()))
        self._drain()
        return code

    def _drain(self):
        """Waits until everything the exited process wrote has been read into the log."""
        for t in getattr(self, "_pumps", []):
            t.join(timeout=5)

    def kill9(self):
        self.close_conn()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._drain()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Sends @sig and returns the exit code."""
        self.close_conn()
        self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def restart(self):
        if self.proc.poll() is None:
            self.kill9()
        return self.start()

    # -- HTTP ------------------------------------------------------------------------------
    def conn(self):
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return self._conn

    def close_conn(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method, path, body=None, headers=None, raw=None):
        """Sends one request on the keep-alive connection. @body: dict/list (sent as JSON),
        str or bytes; @raw: bytes sent as-is. Retries once on a stale keep-alive connection."""
        hdrs = dict(headers or {})
        data = raw
        if body is not None and raw is None:
            if isinstance(body, (dict, list)):
                data = json.dumps(body).encode()
            elif isinstance(body, str):
                data = body.encode()
            else:
                data = body
            hdrs.setdefault("Content-Type", "application/json")
        for attempt in (0, 1):
            c = self.conn()
            try:
                c.request(method, path, body=data, headers=hdrs)
                r = c.getresponse()
                payload = r.read()
                headers_out = {k.lower(): v for k, v in r.getheaders()}
                if headers_out.get("connection", "").lower() == "close":
                    self.close_conn()
                return Response(r.status, headers_out, payload)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close_conn()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def socket(self, timeout=10):
        """A fresh raw TCP connection to the server."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s


def _port_from_line(line):
    """Extracts port=N (text) or "port":"N" (JSON) from the listening line."""
    if line.startswith("{"):
        try:
            return int(json.loads(line)["port"])
        except (ValueError, KeyError):
            return None
    for tok in line.split():
        if tok.startswith("port="):
            return int(tok[5:])
    return None


def read_responses(sock, count, timeout=10):
    """Reads @count HTTP responses from a raw socket; returns [(status, headers, body)]."""
    sock.settimeout(timeout)
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed after %d responses: %r" % (len(out), buf))
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for l in lines[1:]:
            k, v = l.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        if status == 100:
            out.append((100, headers, b""))
            continue
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("connection closed mid-body")
            buf += chunk
        out.append((status, headers, buf[:n]))
        buf = buf[n:]
    return out


def wait_closed(sock, timeout=10):
    """Returns True when the server closes the connection within @timeout (data is drained)."""
    sock.settimeout(timeout)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


class Harness:
    """Per-test context: a temp directory and the servers started in it."""

    def __init__(self, binary):
        self.binary = os.path.abspath(binary)
        self.tmp = tempfile.mkdtemp(prefix="mlrelay-test-")
        self.servers = []
        self.pg_dbs = []

    def server(self, args=(), env=None, config=None, data_dir=None, start=True, pg_db=None):
        d = data_dir or os.path.join(self.tmp, "data%d" % len(self.servers))
        s = Server(self, d, args=args, env=env, config=config)
        s.pg_db = pg_db
        self.servers.append(s)
        if start:
            s.start()
        return s

    def run(self, args, env=None, stdin=None, timeout=15):
        """Runs the binary to completion; returns (exit code, stdout, stderr) as text."""
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run([self.binary] + list(args), input=stdin, capture_output=True,
                           env=e, timeout=timeout)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def cleanup(self):
        """Stops every server still running with SIGTERM and returns a list of problems: a
        server that did not exit 0, or whose output shows a sanitizer report (so ASan/UBSan/LSan
        findings fail the black-box test that triggered them)."""
        problems = []
        for s in self.servers:
            if s.proc is None:
                continue
            if s.proc.poll() is None:
                s.close_conn()
                s.proc.send_signal(signal.SIGTERM)
                try:
                    code = s.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    s.proc.kill()
                    s.proc.wait()
                    code = "hung"
                if code != 0:
                    problems.append("server %s did not stop cleanly (exit %s)" % (s.data_dir, code))
            s._drain()  # every line the process wrote is in the log before we scan it
            text = s.log()
            for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:",
                           "ThreadSanitizer", "UndefinedBehaviorSanitizer"):
                if marker in text:
                    problems.append("sanitizer report in server %s output" % s.data_dir)
                    break
        shutil.rmtree(self.tmp, ignore_errors=True)
        for name in self.pg_dbs:
            try:
                psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
            except Exception as e:  # a leftover database is harmless; say so and go on
                print("could not drop %s: %s" % (name, e))
        return problems
