"""Black-box tests of the HTTP layer (spec README §1 `GET /`, §2 HTTP layer).

Most cases talk to the server over raw sockets so that framing, ordering, timing and connection
closes are observed exactly as a client sees them. Every case starts its own server.
"""

import json
import random
import select
import socket
import time

import harness
from harness import Response

JSON_CT = "application/json; charset=UTF-8"
MML = "plugins.ml_commons.max_model_on_node"  # an int setting (0..10000) used as a marker


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def build(method, path, body=None, headers=None, version="1.1", host=True, ctype=True):
    """One request as bytes. @body: dict/list (JSON), str or bytes; Content-Length is added."""
    lines = ["%s %s HTTP/%s" % (method, path, version)]
    if host:
        lines.append("Host: 127.0.0.1")
    data = b""
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        if ctype:
            lines.append("Content-Type: application/json")
        lines.append("Content-Length: %d" % len(data))
    for k, v in (headers or {}).items():
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data


def put_mml(n, section="transient"):
    return build("PUT", "/_cluster/settings?flat_settings=true", {section: {MML: n}})


class Reader:
    """Reads HTTP/1.1 responses from a raw socket, keeping unread bytes between calls."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.raw_heads = []

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out waiting for the server; have %r" % self.buf[:300])
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError("timed out waiting for the server; have %r" % self.buf[:300])
        if not chunk:
            raise EOFError("connection closed; unread %r" % self.buf[:300])
        self.buf += chunk

    def response(self, head=False, timeout=5):
        """The next response as a harness.Response; @head: it answers a HEAD (no body)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        raw_head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.raw_heads.append(raw_head)
        lines = raw_head.decode("latin-1").split("\r\n")
        proto, status = lines[0].split(" ", 2)[:2]
        assert proto == "HTTP/1.1", lines[0]
        status = int(status)
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            k = k.strip().lower()
            assert k not in headers, "duplicate header %s in %r" % (k, raw_head)
            headers[k] = v.strip()
        if status == 100:
            return Response(100, headers, b"")
        assert "transfer-encoding" not in headers, raw_head
        assert "content-length" in headers, "no content-length in %r" % raw_head
        n = 0 if head else int(headers["content-length"])
        while len(self.buf) < n:
            self._fill(deadline)
        body, self.buf = self.buf[:n], self.buf[n:]
        return Response(status, headers, body)

    def responses(self, count, heads=None, timeout=10):
        heads = heads or [False] * count
        return [self.response(head=heads[i], timeout=timeout) for i in range(count)]

    def eof(self, timeout=3):
        """True when the server closes the connection within @timeout with nothing more sent."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except EOFError:
            pass
        except ConnectionResetError:
            pass
        except AssertionError:
            return False
        assert self.buf == b"", "unexpected bytes before close: %r" % self.buf[:300]
        return True

    def quiet(self, seconds):
        """True when nothing arrives (and the connection stays open) for @seconds."""
        r, _, _ = select.select([self.sock], [], [], seconds)
        return not r and self.buf == b""


def connect(srv, timeout=10):
    s = srv.socket(timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def exchange(srv, data, count=1, heads=None):
    """Sends @data on a fresh connection and reads @count responses; returns (responses, reader)."""
    s = connect(srv)
    s.sendall(data)
    rd = Reader(s)
    return rd.responses(count, heads=heads), rd


def check_ct(r):
    assert r.headers.get("content-type") == JSON_CT, r.headers


def assert_closing(r):
    assert r.headers.get("connection", "").lower() == "close", r.headers


def send_ignoring_errors(sock, data):
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def flat_settings(srv):
    r = srv.get("/_cluster/settings?flat_settings=true")
    assert r.status == 200, r
    return r.json


# ------------------------------------------------------------------------------------------------
# GET / and HEAD /
# ------------------------------------------------------------------------------------------------

def test_root_shape(h):
    srv = h.server()
    r = srv.get("/")
    assert r.status == 200, r
    check_ct(r)
    j = r.json
    for k in ("name", "cluster_name", "cluster_uuid", "tagline"):
        assert isinstance(j.get(k), str) and j[k], (k, j)
    assert len(j["cluster_uuid"]) == 22, j["cluster_uuid"]
    v = j["version"]
    assert v["distribution"] == "mlrelay", v
    assert v["number"] == "2.19.0", v
    assert isinstance(v.get("mlrelay_version"), str) and v["mlrelay_version"], v
    # stable across requests (and the uuid across a restart: it identifies the data dir)
    assert srv.get("/").json == j
    srv.restart()
    assert srv.get("/").json["cluster_uuid"] == j["cluster_uuid"]


def test_head_root(h):
    srv = h.server()
    get_body = srv.get("/").body
    s = connect(srv)
    rd = Reader(s)
    s.sendall(build("HEAD", "/"))
    r = rd.response(head=True)
    assert r.status == 200, r
    check_ct(r)
    assert int(r.headers["content-length"]) == len(get_body), (r.headers, len(get_body))
    assert rd.quiet(0.3), "HEAD response carried a body: %r" % rd.buf
    # the connection is still usable and the next bytes are exactly the next response
    s.sendall(build("GET", "/"))
    r2 = rd.response()
    assert r2.status == 200 and r2.body == get_body, r2
    # HEAD of an error: status and length of the error, no body
    s.sendall(build("HEAD", "/x/y") + build("GET", "/"))
    e = rd.response(head=True)
    assert e.status == 400 and int(e.headers["content-length"]) > 0, e
    check_ct(e)
    r3 = rd.response()
    assert r3.status == 200 and r3.body == get_body, r3
    s.close()


# ------------------------------------------------------------------------------------------------
# content type, ?pretty
# ------------------------------------------------------------------------------------------------

def test_content_type_on_every_response(h):
    srv = h.server(config={"http.max_content_length": "1kb"})
    cases = [
        (build("GET", "/"), 200, False),
        (build("HEAD", "/"), 200, True),
        (build("GET", "/_cluster/settings"), 200, False),
        (put_mml(3), 200, False),
        (build("GET", "/x/y"), 400, False),
        (build("DELETE", "/_cluster/settings"), 405, False),
        (build("PUT", "/_cluster/settings", "{nope"), 400, False),
        (build("PUT", "/_cluster/settings", "{}", ctype=False,
               headers={"Content-Type": "text/plain"}), 406, False),
        (build("PUT", "/_cluster/settings", headers={"Content-Length": "0"}), 400, False),
    ]
    for data, status, head in cases:
        (r,), _ = exchange(srv, data, heads=[head])
        assert r.status == status, (data, r)
        check_ct(r)
    # connection-level errors too
    (r,), _ = exchange(srv, build("PUT", "/_cluster/settings",
                                  headers={"Content-Length": "5000"}))
    assert r.status == 413, r
    check_ct(r)
    (r,), _ = exchange(srv, build("GET", "/", headers={"X-Big": "a" * 20000}))
    assert r.status == 431, r
    check_ct(r)
    (r,), _ = exchange(srv, b"GARBAGE\r\n\r\n")
    assert r.status == 400, r
    check_ct(r)


def _check_pretty(srv, path, status):
    plain = srv.get(path)
    pretty = srv.get(path + ("&" if "?" in path else "?") + "pretty")
    assert plain.status == status and pretty.status == status, (plain, pretty)
    check_ct(pretty)
    assert b"\n" not in plain.body.strip(), plain.body
    text = pretty.body.decode()
    assert text.count("\n") >= 3, text
    assert "\n  \"" in text, text  # indented members
    assert pretty.json == plain.json, (pretty.body, plain.body)
    assert pretty.body != plain.body


def test_pretty(h):
    srv = h.server()
    assert srv.put("/_cluster/settings", {"transient": {MML: 4}}).status == 200
    _check_pretty(srv, "/", 200)
    _check_pretty(srv, "/_cluster/settings", 200)
    _check_pretty(srv, "/_cluster/settings?flat_settings=true", 200)
    _check_pretty(srv, "/x/y", 400)
    # errors produced by the dispatcher honour ?pretty too
    r = srv.put("/_cluster/settings?pretty", "{bad")
    assert r.status == 400 and r.body.count(b"\n") >= 3, r
    assert r.error()[0] == "json_parse_exception", r
    # ?pretty=false is compact
    r = srv.get("/?pretty=false")
    assert r.status == 200 and b"\n" not in r.body.strip(), r
    # a PUT echo in pretty form
    r = srv.put("/_cluster/settings?pretty", {"transient": {MML: 5}})
    assert r.status == 200 and r.body.count(b"\n") >= 3, r
    assert r.json["acknowledged"] is True, r


# ------------------------------------------------------------------------------------------------
# routing errors
# ------------------------------------------------------------------------------------------------

def test_unknown_path(h):
    srv = h.server()
    r = srv.get("/x/y")
    assert r.status == 400, r
    check_ct(r)
    assert r.error() == ("illegal_argument_exception",
                         "no handler found for uri [/x/y] and method [GET]"), r
    r = srv.post("/x/y", {"a": 1})
    assert r.status == 400, r
    assert r.error() == ("illegal_argument_exception",
                         "no handler found for uri [/x/y] and method [POST]"), r
    r = srv.get("/_plugins/_ml/nothing_here")
    assert r.error() == ("illegal_argument_exception",
                         "no handler found for uri [/_plugins/_ml/nothing_here] and method [GET]"), r
    # the connection stays usable after a routing error (it is not a connection-level error)
    assert "connection" not in r.headers, r.headers
    assert srv.get("/").status == 200


def test_wrong_method(h):
    srv = h.server()
    r = srv.delete("/_cluster/settings")
    assert r.status == 405, r
    check_ct(r)
    allow = sorted(m.strip() for m in r.headers["allow"].split(","))
    assert allow == ["GET", "PUT"], r.headers
    t, reason = r.error()
    assert isinstance(t, str) and t, r
    assert reason == ("Incorrect HTTP method for uri [/_cluster/settings] and method [DELETE], "
                      "allowed: [GET, PUT]"), reason
    r = srv.post("/_cluster/settings", {"transient": {}})
    assert r.status == 405, r
    assert r.error()[1] == ("Incorrect HTTP method for uri [/_cluster/settings] and method [POST], "
                            "allowed: [GET, PUT]"), r
    r = srv.request("DELETE", "/")
    assert r.status == 405, r
    assert "GET" in [m.strip() for m in r.headers["allow"].split(",")], r.headers
    assert "PUT" not in r.headers["allow"], r.headers
    # nothing was changed by the refused method, and the connection is still fine
    assert srv.get("/").status == 200


# ------------------------------------------------------------------------------------------------
# keep-alive and connection close
# ------------------------------------------------------------------------------------------------

def test_keep_alive(h):
    srv = h.server()
    # http.client: one socket for many requests
    c = srv.conn()
    first = None
    for i in range(6):
        r = srv.get("/") if i % 2 == 0 else srv.put("/_cluster/settings", {"transient": {MML: i}})
        assert r.status == 200, r
        assert "connection" not in r.headers, r.headers
        if first is None:
            first = c.sock
        assert c.sock is first and srv.conn() is c, "connection was not reused"
    # raw socket: request, wait, request again on the same socket
    s = connect(srv)
    rd = Reader(s)
    for i in range(5):
        s.sendall(build("GET", "/_cluster/settings?flat_settings=true"))
        r = rd.response()
        assert r.status == 200 and r.json["transient"] == {MML: "5"}, r
        assert rd.quiet(0.05)
    s.close()


def test_http10_closes(h):
    srv = h.server()
    s = connect(srv)
    rd = Reader(s)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    r = rd.response()
    assert r.status == 200 and r.json["version"]["distribution"] == "mlrelay", r
    assert_closing(r)
    assert rd.eof(timeout=2), "server kept an HTTP/1.0 connection open"
    # a second HTTP/1.0 request pipelined behind the first is not answered
    (r,), rd = exchange(srv, b"GET / HTTP/1.0\r\n\r\nGET /x/y HTTP/1.0\r\n\r\n")
    assert r.status == 200, r
    assert_closing(r)
    assert rd.eof(timeout=2)


def test_connection_close_header(h):
    srv = h.server()
    (r,), rd = exchange(srv, build("GET", "/", headers={"Connection": "close"}))
    assert r.status == 200, r
    assert_closing(r)
    assert rd.eof(timeout=2)
    # after a keep-alive request, a "close" request ends the connection; later ones are dropped
    data = (build("GET", "/") + build("GET", "/_cluster/settings", headers={"Connection": "close"})
            + build("GET", "/x/y"))
    (r1, r2), rd = exchange(srv, data, count=2)
    assert r1.status == 200 and "connection" not in r1.headers, r1
    assert r2.status == 200 and "persistent" in r2.json, r2
    assert_closing(r2)
    assert rd.eof(timeout=2)
    # an async handler (persistent settings are committed to disk first) with Connection: close
    (r,), rd = exchange(srv, build("PUT", "/_cluster/settings", {"persistent": {MML: 9}},
                                   headers={"Connection": "close"}))
    assert r.status == 200 and r.json["acknowledged"] is True, r
    assert_closing(r)
    assert rd.eof(timeout=2)
    assert flat_settings(srv)["persistent"] == {MML: "9"}


def test_request_split_across_reads(h):
    """A request whose bytes arrive in several TCP reads is answered as soon as it is complete."""
    srv = h.server()
    s = connect(srv)
    rd = Reader(s)
    # headers, then the final CRLF later
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    time.sleep(0.1)
    s.sendall(b"\r\n")
    r = rd.response(timeout=2)
    assert r.status == 200 and r.json["cluster_name"] == "mlrelay", r
    # headers, then the body later (what http.client and most clients do)
    body = json.dumps({"transient": {MML: 8}}).encode()
    s.sendall(("PUT /_cluster/settings?flat_settings=true HTTP/1.1\r\nHost: x\r\n"
               "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
               % len(body)).encode())
    time.sleep(0.1)
    s.sendall(body)
    r = rd.response(timeout=2)
    assert r.status == 200 and r.json["transient"] == {MML: "8"}, r
    # the method alone, then the rest
    s.sendall(b"GE")
    time.sleep(0.1)
    s.sendall(b"T /_cluster/settings?flat_settings=true HTTP/1.1\r\nHost: x\r\n\r\n")
    r = rd.response(timeout=2)
    assert r.status == 200 and r.json["transient"] == {MML: "8"}, r
    s.close()


# ------------------------------------------------------------------------------------------------
# pipelining
# ------------------------------------------------------------------------------------------------

def _pipeline():
    """20 mixed requests and, for each, a check of its response (in order)."""
    reqs, checks, heads = [], [], []

    def add(data, check, head=False):
        reqs.append(data)
        checks.append(check)
        heads.append(head)

    def status(n):
        return lambda r: r.status == n

    for i in range(4):
        add(build("GET", "/"), lambda r: r.status == 200 and r.json["cluster_name"] == "mlrelay")
        add(put_mml(10 + i),
            lambda r, i=i: r.status == 200 and r.json["transient"] == {MML: str(10 + i)})
        add(build("GET", "/_cluster/settings?flat_settings=true"),
            lambda r, i=i: r.status == 200 and r.json["transient"].get(MML) == str(10 + i))
        add(build("GET", "/x/y"),
            lambda r: r.error() == ("illegal_argument_exception",
                                    "no handler found for uri [/x/y] and method [GET]"))
        if i == 1:
            # persistent: answered only after an asynchronous disk commit
            add(put_mml(77, "persistent"),
                lambda r: r.status == 200 and r.json["persistent"] == {MML: "77"})
        elif i == 2:
            add(build("HEAD", "/"), lambda r: r.status == 200 and r.body == b"", head=True)
        elif i == 3:
            add(build("DELETE", "/_cluster/settings"), status(405))
        else:
            add(build("PUT", "/_cluster/settings", "{oops"),
                lambda r: r.status == 400 and r.error()[0] == "json_parse_exception")
    assert len(reqs) == 20
    return b"".join(reqs), checks, heads


def _check_pipeline(srv, rd, checks, heads):
    rs = rd.responses(len(checks), heads=heads)
    for i, (r, check) in enumerate(zip(rs, checks)):
        assert check(r), "response %d out of order or wrong: %r" % (i, r)
        check_ct(r)
        assert "connection" not in r.headers, r.headers
    assert rd.quiet(0.2), "extra bytes after the pipelined responses: %r" % rd.buf
    # the connection is still usable afterwards
    rd.sock.sendall(build("GET", "/_cluster/settings?flat_settings=true"))
    r = rd.response()
    assert r.json == {"persistent": {MML: "77"}, "transient": {MML: "13"}}, r


def test_pipelining_one_write(h):
    srv = h.server()
    data, checks, heads = _pipeline()
    s = connect(srv)
    s.sendall(data)
    _check_pipeline(srv, Reader(s), checks, heads)


def test_pipelining_random_chunks(h):
    srv = h.server()
    data, checks, heads = _pipeline()
    rng = random.Random(20240521)
    for _ in range(3):
        srv.put("/_cluster/settings", {"transient": {MML: None}, "persistent": {MML: None}})
        s = connect(srv)
        i = 0
        while i < len(data):
            n = rng.choice([1, 2, 3, 5, 17, 64, 200])
            s.sendall(data[i:i + n])
            i += n
            if rng.random() < 0.3:
                time.sleep(0.001)
        _check_pipeline(srv, Reader(s), checks, heads)
        s.close()


def test_pipelining_byte_by_byte(h):
    srv = h.server()
    data = (build("GET", "/") + put_mml(21) + build("HEAD", "/")
            + build("GET", "/_cluster/settings?flat_settings=true") + build("GET", "/x/y"))
    s = connect(srv)
    rd = Reader(s)
    for b in data:
        s.send(bytes([b]))
        time.sleep(0.0005)
    rs = rd.responses(5, heads=[False, False, True, False, False])
    assert [r.status for r in rs] == [200, 200, 200, 200, 400], rs
    assert rs[0].json["version"]["number"] == "2.19.0", rs[0]
    assert rs[1].json["transient"] == {MML: "21"}, rs[1]
    assert rs[3].json["transient"] == {MML: "21"}, rs[3]
    assert rs[4].error()[1] == "no handler found for uri [/x/y] and method [GET]", rs[4]
    # splits exactly at the CRLF between headers and body, and inside the final CRLFCRLF
    body = json.dumps({"transient": {MML: 22}}).encode()
    head = ("PUT /_cluster/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % len(body)).encode()
    for part in (head[:-3], head[-3:-1], head[-1:], body[:1], body[1:]):
        s.sendall(part)
        time.sleep(0.02)
    r = rd.response()
    assert r.status == 200 and r.json["transient"] == {"plugins": {"ml_commons": {
        "max_model_on_node": "22"}}}, r
    s.close()


# ------------------------------------------------------------------------------------------------
# chunked bodies and Expect: 100-continue
# ------------------------------------------------------------------------------------------------

def _chunked_head(path="/_cluster/settings?flat_settings=true", extra=""):
    return ("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n%s\r\n" % (path, extra)).encode()


def _chunk(data, ext=""):
    return ("%X%s\r\n" % (len(data), ext)).encode() + data + b"\r\n"


def test_chunked_body(h):
    srv = h.server()
    body = json.dumps({"transient": {MML: 31}, "persistent": {MML: 32}}).encode()
    parts = [body[:1], body[1:9], body[9:30], body[30:]]
    # in one write
    data = _chunked_head() + b"".join(_chunk(p) for p in parts) + b"0\r\n\r\n"
    (r,), _ = exchange(srv, data)
    assert r.status == 200, r
    assert r.json == {"acknowledged": True, "persistent": {MML: "32"},
                      "transient": {MML: "31"}}, r
    assert flat_settings(srv) == {"persistent": {MML: "32"}, "transient": {MML: "31"}}
    # chunk by chunk in separate writes, with a chunk extension, then a keep-alive follow-up
    body = json.dumps({"transient": {MML: 33}}).encode()
    s = connect(srv)
    rd = Reader(s)
    s.sendall(_chunked_head())
    for i in range(0, len(body), 7):
        time.sleep(0.01)
        s.sendall(_chunk(body[i:i + 7], ext=";x=y" if i == 7 else ""))
    assert rd.quiet(0.1), "answered before the last chunk: %r" % rd.buf
    s.sendall(b"0\r\n\r\n" + build("GET", "/_cluster/settings?flat_settings=true"))
    r1, r2 = rd.responses(2)
    assert r1.status == 200 and r1.json["transient"] == {MML: "33"}, r1
    assert r2.json["transient"] == {MML: "33"}, r2
    # a bad JSON body that arrives chunked is still a 400 json_parse_exception
    s.sendall(_chunked_head() + _chunk(b'{"transient":') + _chunk(b"{oops") + b"0\r\n\r\n")
    r = rd.response()
    assert r.status == 400 and r.error()[0] == "json_parse_exception", r
    s.close()


def test_expect_continue(h):
    srv = h.server()
    body = json.dumps({"transient": {MML: 41}}).encode()
    head = ("PUT /_cluster/settings?flat_settings=true HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n"
            "Expect: 100-continue\r\n\r\n" % len(body)).encode()
    s = connect(srv)
    rd = Reader(s)
    s.sendall(head)
    r = rd.response(timeout=2)
    assert r.status == 100, r
    assert rd.raw_heads[-1] == b"HTTP/1.1 100 Continue", rd.raw_heads
    assert rd.quiet(0.2), "final response before the body was sent: %r" % rd.buf
    s.sendall(body)
    r = rd.response()
    assert r.status == 200 and r.json["transient"] == {MML: "41"}, r
    check_ct(r)
    # and again on the same connection, with a chunked body
    s.sendall(_chunked_head(extra="Expect: 100-continue\r\n"))
    assert rd.response(timeout=2).status == 100
    s.sendall(_chunk(b'{"transient":{"%s":42}}' % MML.encode()) + b"0\r\n\r\n")
    r = rd.response()
    assert r.status == 200 and r.json["transient"] == {MML: "42"}, r
    s.close()
    assert flat_settings(srv)["transient"] == {MML: "42"}


def test_expect_continue_too_large(h):
    srv = h.server(config={"http.max_content_length": "1kb"})
    s = connect(srv)
    rd = Reader(s)
    s.sendall(b"PUT /_cluster/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
    r = rd.response(timeout=2)
    assert r.status == 413, "expected 413 and no 100 Continue, got %r" % r
    assert r.error()[0] == "content_too_long_exception", r
    assert_closing(r)
    assert rd.eof(timeout=2)
    assert all(b" 100 " not in hd for hd in rd.raw_heads), rd.raw_heads
    assert srv.get("/").status == 200


# ------------------------------------------------------------------------------------------------
# 413
# ------------------------------------------------------------------------------------------------

def test_413_before_body(h):
    srv = h.server(config={"http.max_content_length": "1kb"})
    s = connect(srv)
    rd = Reader(s)
    t0 = time.monotonic()
    s.sendall(b"PUT /_cluster/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000\r\n\r\n")
    r = rd.response(timeout=2)
    assert time.monotonic() - t0 < 1.0, "413 was not immediate"
    assert r.status == 413, r
    check_ct(r)
    assert_closing(r)
    t, reason = r.error()
    assert t == "content_too_long_exception", r
    assert "1024" in reason, reason
    assert rd.eof(timeout=2), "connection not closed after 413"
    # other connections (and new ones) are still served
    assert srv.get("/").status == 200
    # a client that sends its whole oversized body anyway reads the 413, not a reset
    s = connect(srv)
    rd = Reader(s)
    s.sendall(build("PUT", "/_cluster/settings", b"{" + b" " * 99998 + b"}"))
    r = rd.response()
    assert r.status == 413, r
    assert rd.eof(timeout=3)
    assert srv.get("/_cluster/settings").status == 200


def test_413_boundary(h):
    srv = h.server(config={"http.max_content_length": "1kb"})
    core = json.dumps({"transient": {MML: 51}}).encode()
    exact = core[:-1] + b" " * (1024 - len(core)) + b"}"
    assert len(exact) == 1024
    (r,), _ = exchange(srv, build("PUT", "/_cluster/settings?flat_settings=true", exact))
    assert r.status == 200 and r.json["transient"] == {MML: "51"}, r
    (r,), rd = exchange(srv, build("PUT", "/_cluster/settings", exact[:-1] + b" }"))
    assert r.status == 413, r
    assert rd.eof(timeout=3)
    assert flat_settings(srv)["transient"] == {MML: "51"}


def test_413_chunked(h):
    srv = h.server(config={"http.max_content_length": "1kb"})
    s = connect(srv)
    rd = Reader(s)
    s.sendall(_chunked_head())
    send_ignoring_errors(s, _chunk(b'{"transient":{"' + MML.encode() + b'":61}'))
    for _ in range(4):
        send_ignoring_errors(s, _chunk(b" " * 300))
    r = rd.response(timeout=3)
    assert r.status == 413, r
    assert r.error()[0] == "content_too_long_exception", r
    assert_closing(r)
    assert rd.eof(timeout=3)
    # nothing was applied, and the node still serves other connections
    assert flat_settings(srv)["transient"] == {}
    r = srv.put("/_cluster/settings", {"transient": {MML: 62}})
    assert r.status == 200, r


# ------------------------------------------------------------------------------------------------
# 431
# ------------------------------------------------------------------------------------------------

def test_431_large_header(h):
    srv = h.server()
    (r,), rd = exchange(srv, build("GET", "/", headers={"X-Big": "a" * 20000}))
    assert r.status == 431, r
    check_ct(r)
    assert_closing(r)
    assert r.error()[0] == "too_long_http_header_exception", r
    assert rd.eof(timeout=3)
    # many medium headers adding up past the limit
    hdrs = {"X-H%02d" % i: "b" * 1000 for i in range(20)}
    (r,), rd = exchange(srv, build("GET", "/", headers=hdrs))
    assert r.status == 431, r
    assert rd.eof(timeout=3)
    # below the limit is fine
    (r,), _ = exchange(srv, build("GET", "/", headers={"X-Big": "a" * 12000}))
    assert r.status == 200, r


def test_431_long_url(h):
    srv = h.server()
    (r,), rd = exchange(srv, build("GET", "/" + "u" * 20000))
    assert r.status == 431, r
    assert r.error()[0] == "too_long_http_header_exception", r
    assert_closing(r)
    assert rd.eof(timeout=3)
    (r,), _ = exchange(srv, build("GET", "/?pretty&x=" + "q" * 20000))
    assert r.status == 431, r
    assert srv.get("/").status == 200


def test_431_configured_limit(h):
    srv = h.server(config={"http.max_header_size": "2kb"})
    (r,), _ = exchange(srv, build("GET", "/", headers={"X-Big": "a" * 1500}))
    assert r.status == 200, r
    (r,), rd = exchange(srv, build("GET", "/", headers={"X-Big": "a" * 2500}))
    assert r.status == 431, r
    assert "2048" in r.error()[1], r
    assert rd.eof(timeout=3)
    # an oversized request pipelined behind a good one: the good one is answered first
    (r1, r2), rd = exchange(srv, build("GET", "/") + build("GET", "/" + "v" * 3000), count=2)
    assert r1.status == 200 and r2.status == 431, (r1, r2)
    assert rd.eof(timeout=3)


# ------------------------------------------------------------------------------------------------
# malformed input
# ------------------------------------------------------------------------------------------------

def _expect_400_close(srv, data):
    (r,), rd = exchange(srv, data)
    assert r.status == 400, (data, r)
    check_ct(r)
    assert_closing(r)
    t, reason = r.error()
    assert t and reason, r
    assert rd.eof(timeout=3), "not closed after %r" % data
    return r


def test_malformed_request(h):
    srv = h.server()
    _expect_400_close(srv, b"GARBAGE\r\n\r\n")
    _expect_400_close(srv, b"GET / HTTP/1.1 extra\r\n\r\n")
    _expect_400_close(srv, b"GET / FTP/1.1\r\nHost: x\r\n\r\n")
    _expect_400_close(srv, b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n")
    _expect_400_close(srv, b"PUT /_cluster/settings HTTP/1.1\r\nContent-Length: abc\r\n\r\n")
    _expect_400_close(srv, b"PUT /_cluster/settings HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"zz\r\n{}\r\n0\r\n\r\n")
    _expect_400_close(srv, bytes(range(256)) * 4)
    _expect_400_close(srv, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64)  # TLS
    assert srv.get("/").status == 200


def test_pipelined_garbage_after_valid(h):
    srv = h.server()
    (r1, r2), rd = exchange(srv, build("GET", "/") + b"GARBAGE\r\n\r\n", count=2)
    assert r1.status == 200 and r1.json["cluster_name"] == "mlrelay", r1
    assert r2.status == 400, r2
    r2.error()
    assert_closing(r2)
    assert rd.eof(timeout=3)
    # behind an asynchronous request (persistent settings commit) and another valid one
    data = put_mml(71, "persistent") + build("GET", "/x/y") + b"\x00\x01\x02 junk\r\n\r\n"
    (r1, r2, r3), rd = exchange(srv, data, count=3)
    assert r1.status == 200 and r1.json["persistent"] == {MML: "71"}, r1
    assert r2.status == 400 and "connection" not in r2.headers, r2
    assert r3.status == 400, r3
    assert_closing(r3)
    assert rd.eof(timeout=3)


# ------------------------------------------------------------------------------------------------
# connection cap
# ------------------------------------------------------------------------------------------------

def test_connection_cap(h):
    srv = h.server(config={"http.max_connections": 3})
    socks = [connect(srv) for _ in range(3)]
    readers = [Reader(s) for s in socks]
    # two of them make a request, the third stays silent
    for s, rd in zip(socks[:2], readers[:2]):
        s.sendall(build("GET", "/"))
        assert rd.response().status == 200
    time.sleep(0.1)
    s4 = connect(srv)
    rd4 = Reader(s4)
    r = rd4.response(timeout=3)
    assert r.status == 429, r
    check_ct(r)
    assert_closing(r)
    t, reason = r.error()
    assert t == "rejected_execution_exception", r
    assert rd4.eof(timeout=3)
    # a rejected client that sends a request anyway also gets 429
    s5 = connect(srv)
    send_ignoring_errors(s5, build("GET", "/"))
    rd5 = Reader(s5)
    assert rd5.response(timeout=3).status == 429
    assert rd5.eof(timeout=3)
    # the three accepted connections are unaffected
    for s, rd in zip(socks, readers):
        s.sendall(build("GET", "/_cluster/settings"))
        assert rd.response().status == 200
    # closing one frees a slot
    socks[0].close()
    time.sleep(0.3)
    s6 = connect(srv)
    rd6 = Reader(s6)
    s6.sendall(build("GET", "/"))
    r = rd6.response()
    assert r.status == 200 and r.json["version"]["distribution"] == "mlrelay", r
    assert "connection" not in r.headers, r.headers
    # and the cap still holds with the new one
    s7 = connect(srv)
    assert Reader(s7).response(timeout=3).status == 429
    for s in socks[1:] + [s4, s5, s6, s7]:
        s.close()


# ------------------------------------------------------------------------------------------------
# timeouts
# ------------------------------------------------------------------------------------------------

def _time_to_close(rd, limit=3.0):
    t0 = time.monotonic()
    assert rd.eof(timeout=limit), "connection not closed within %ss" % limit
    return time.monotonic() - t0


def test_idle_timeout(h):
    srv = h.server(config={"http.idle_timeout": "1s"})
    fresh = Reader(connect(srv))  # never sends anything
    t_fresh = time.monotonic()
    s = connect(srv)
    rd = Reader(s)
    s.sendall(build("GET", "/"))
    assert rd.response().status == 200
    t0 = time.monotonic()
    assert rd.quiet(0.8), "idle connection closed too early"
    assert rd.eof(timeout=2.0), "idle connection not closed"
    dt = time.monotonic() - t0
    assert 0.8 <= dt <= 2.0, dt
    assert fresh.eof(timeout=1.0), "connection without requests not closed"
    assert 0.8 <= time.monotonic() - t_fresh <= 2.5
    # closed quietly: the server still serves new connections
    assert srv.get("/").status == 200


def test_idle_timeout_reset_by_requests(h):
    srv = h.server(config={"http.idle_timeout": "1s"})
    s = connect(srv)
    rd = Reader(s)
    for i in range(4):
        s.sendall(build("GET", "/"))
        assert rd.response().status == 200, i
        assert rd.quiet(0.6), "closed while requests keep coming"
    dt = _time_to_close(rd)
    assert dt <= 1.5, dt


def test_request_timeout_partial_headers(h):
    srv = h.server(config={"http.request_timeout": "1s"})
    s = connect(srv)
    rd = Reader(s)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no final CRLF
    t0 = time.monotonic()
    r = rd.response(timeout=3)
    dt = time.monotonic() - t0
    assert 0.8 <= dt <= 2.0, dt
    assert r.status == 408, r
    check_ct(r)
    assert_closing(r)
    assert r.error()[0] == "timeout_exception", r
    assert rd.eof(timeout=2)


def test_request_timeout_slowloris(h):
    srv = h.server(config={"http.request_timeout": "1s"})
    s = connect(srv)
    rd = Reader(s)
    data = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    t0 = time.monotonic()
    for b in data:
        send_ignoring_errors(s, bytes([b]))
        r, _, _ = select.select([s], [], [], 0.1)
        if r or time.monotonic() - t0 > 4:
            break
    r = rd.response(timeout=1)
    dt = time.monotonic() - t0
    assert r.status == 408, r
    assert 0.8 <= dt <= 2.0, dt
    assert rd.eof(timeout=3)


def test_request_timeout_slow_body(h):
    srv = h.server(config={"http.request_timeout": "1s"})
    s = connect(srv)
    rd = Reader(s)
    s.sendall(b"PUT /_cluster/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 60\r\n\r\n{\"transient\":")
    t0 = time.monotonic()
    r = rd.response(timeout=3)
    assert 0.8 <= time.monotonic() - t0 <= 2.0
    assert r.status == 408, r
    assert rd.eof(timeout=2)
    assert flat_settings(srv)["transient"] == {}


def test_request_timeout_not_idle(h):
    """The request timeout covers receiving a request, not waiting between requests."""
    srv = h.server(config={"http.request_timeout": "1s"})
    s = connect(srv)
    rd = Reader(s)
    s.sendall(build("GET", "/"))
    assert rd.response().status == 200
    assert rd.quiet(1.6), "idle connection closed by the request timeout"
    s.sendall(build("GET", "/"))
    assert rd.response().status == 200
    # a request that arrives in pieces within the timeout is fine
    req = put_mml(81)
    for i in range(0, len(req), 20):
        s.sendall(req[i:i + 20])
        time.sleep(0.05)
    r = rd.response()
    assert r.status == 200 and r.json["transient"] == {MML: "81"}, r


# ------------------------------------------------------------------------------------------------
# bodies and headers accepted / refused by the dispatcher
# ------------------------------------------------------------------------------------------------

def test_bad_json_body(h):
    srv = h.server()
    for bad in ("{bad", '{"transient": {}', "{} trailing", '{"a":1,}', "nul"):
        r = srv.put("/_cluster/settings", bad)
        assert r.status == 400, (bad, r)
        check_ct(r)
        assert r.error()[0] == "json_parse_exception", (bad, r)
        assert "connection" not in r.headers, r.headers
    for not_object in ("[1, 2]", "[]", '"s"', "42", "null"):
        r = srv.put("/_cluster/settings", not_object)
        assert r.status == 400, (not_object, r)
        t, reason = r.error()
        assert t and reason, r
    assert flat_settings(srv) == {"persistent": {}, "transient": {}}


def test_content_type_not_json(h):
    srv = h.server()
    body = json.dumps({"transient": {MML: 91}})
    r = srv.put("/_cluster/settings", body, headers={"Content-Type": "text/plain"})
    assert r.status == 406, r
    check_ct(r)
    assert r.error()[1] == "Content-Type header [text/plain] is not supported", r
    assert flat_settings(srv)["transient"] == {}
    # application/json with parameters, and no content type at all, are accepted
    r = srv.put("/_cluster/settings", body, headers={"Content-Type": "application/json; charset=UTF-8"})
    assert r.status == 200, r
    (r,), _ = exchange(srv, build("PUT", "/_cluster/settings", {"transient": {MML: 92}},
                                  ctype=False))
    assert r.status == 200, r
    assert flat_settings(srv)["transient"] == {MML: "92"}


def test_put_empty_body(h):
    srv = h.server()
    (r,), _ = exchange(srv, build("PUT", "/_cluster/settings", headers={"Content-Length": "0"}))
    assert r.status == 400, r
    assert r.error() == ("parse_exception", "request body is required"), r
    (r,), _ = exchange(srv, build("PUT", "/_cluster/settings"))
    assert r.status == 400, r
    assert r.error() == ("parse_exception", "request body is required"), r
    (r,), _ = exchange(srv, _chunked_head() + b"0\r\n\r\n")
    assert r.status == 400, r
    assert r.error() == ("parse_exception", "request body is required"), r


def test_bodies_on_bodiless_routes(h):
    srv = h.server()
    # GET with a JSON body, GET with a body and no content type, no body and no content type
    for data in (build("GET", "/", {"query": {"match_all": {}}}),
                 build("GET", "/", "{}", ctype=False),
                 build("GET", "/_cluster/settings", {"x": 1}),
                 b"GET /_cluster/settings HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET / HTTP/1.1\r\n\r\n"):
        (r,), _ = exchange(srv, data)
        assert r.status == 200, (data, r)
        check_ct(r)


def test_empty_user_agent(h):
    srv = h.server()
    (r1, r2), _ = exchange(srv, b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: \r\n\r\n"
                                b"GET /_cluster/settings HTTP/1.1\r\nHost: x\r\nUser-Agent:\r\n\r\n",
                           count=2)
    assert r1.status == 200 and r1.json["version"]["number"] == "2.19.0", r1
    assert r2.status == 200, r2
    r = srv.put("/_cluster/settings", {"transient": {MML: 93}}, headers={"User-Agent": ""})
    assert r.status == 200, r


# ------------------------------------------------------------------------------------------------
# half-closed clients
# ------------------------------------------------------------------------------------------------

def test_half_close(h):
    srv = h.server()
    for data, check in (
            (build("GET", "/"), lambda r: r.status == 200 and r.json["cluster_name"] == "mlrelay"),
            (put_mml(101, "persistent"),
             lambda r: r.status == 200 and r.json["persistent"] == {MML: "101"}),
            (build("GET", "/x/y"), lambda r: r.status == 400)):
        s = connect(srv)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        rd = Reader(s)
        r = rd.response()
        assert check(r), r
        assert rd.eof(timeout=3)
        s.close()
    assert flat_settings(srv)["persistent"] == {MML: "101"}


def test_half_close_pipelined(h):
    """Requests already sent before the client's FIN are all answered, in order."""
    srv = h.server()
    data = put_mml(111, "persistent") + build("GET", "/_cluster/settings?flat_settings=true")
    s = connect(srv)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    rd = Reader(s)
    r1 = rd.response()
    assert r1.status == 200 and r1.json["persistent"] == {MML: "111"}, r1
    try:
        r2 = rd.response()
    except EOFError:
        raise AssertionError("second pipelined request dropped after the client half-closed")
    assert r2.status == 200 and r2.json["persistent"] == {MML: "111"}, r2
    assert rd.eof(timeout=3)
