"""Black-box tests of TLS on the listener (spec README §1 `tls.cert`/`tls.key`, §8).

Every case makes its own throwaway self-signed certificate (EC P-256, valid one day, SAN
IP:127.0.0.1) with the openssl command-line tool in the test's temporary directory, starts mlrelay
with it, and talks to it with Python's ssl module verifying against that certificate as the only
CA. Raw-socket checks reuse the response reader and request builders of test_http.py.
"""

import http.client
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
import warnings

from test_http import MML, Reader, _check_pipeline, _pipeline, build, put_mml

# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def make_cert(h, name, org="mlrelay-test"):
    """Writes <name>.crt and <name>.key into the test's directory; returns their paths."""
    cert = os.path.join(h.tmp, name + ".crt")
    key = os.path.join(h.tmp, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/O=%s/CN=127.0.0.1" % org,
                    "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1",
                    "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def tls_server(h, cert, key, config=None, args=(), env=None):
    return h.server(args=["--tls-cert", cert, "--tls-key", key] + list(args), config=config,
                    env=env)


def client_ctx(cafile):
    """A client context that trusts only @cafile and checks the name (IP SAN 127.0.0.1)."""
    return ssl.create_default_context(cafile=cafile)


def tls_connect(srv, cafile, timeout=10):
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client_ctx(cafile).wrap_socket(raw, server_hostname="127.0.0.1")


def https(srv, cafile):
    return http.client.HTTPSConnection("127.0.0.1", srv.port, timeout=30,
                                       context=client_ctx(cafile))


def org_of(sock):
    """The O= of the server certificate a connection was given."""
    subject = dict(item[0] for item in sock.getpeercert()["subject"])
    return subject["organizationName"]


def wait_log(srv, text, count=1, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if srv.log().count(text) >= count:
            return
        time.sleep(0.02)
    raise AssertionError("no %r (x%d) in the log:\n%s" % (text, count, srv.log()))


def run_binary(h, args, env=None):
    return h.run(["--listen", "127.0.0.1:0", "--data-dir", os.path.join(h.tmp, "d")] + args,
                 env=env)


# ------------------------------------------------------------------------------------------------
# serving
# ------------------------------------------------------------------------------------------------

def test_get_root_and_keep_alive(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key)
    assert "tls certificate loaded" in srv.log() and "not_after=" in srv.log(), srv.log()
    c = https(srv, cert)
    c.request("GET", "/")
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body)
    assert b'"distribution":"mlrelay"' in body, body
    sock = c.sock
    assert sock.version() in ("TLSv1.2", "TLSv1.3"), sock.version()
    assert org_of(sock) == "mlrelay-test"
    for i in range(5):  # several requests on the same TLS connection
        c.request("GET", "/_cluster/settings")
        r = c.getresponse()
        r.read()
        assert r.status == 200 and r.getheader("connection") is None, r.status
        assert c.sock is sock, "the connection was not kept alive (request %d)" % i
    c.close()


def test_tls12_and_aead_only(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key)
    ctx = client_ctx(cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=10),
                        server_hostname="127.0.0.1")
    assert s.version() == "TLSv1.2", s.version()
    assert "GCM" in s.cipher()[0] or "CHACHA20" in s.cipher()[0], s.cipher()
    s.sendall(build("GET", "/"))
    assert Reader(s).response().status == 200
    s.close()
    # a TLS 1.2 client that offers only CBC suites finds nothing in common
    ctx = client_ctx(cert)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256")
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        raise AssertionError("a CBC-only TLS 1.2 client was accepted")
    except ssl.SSLError as e:
        assert "HANDSHAKE_FAILURE" in str(e).upper(), e


def test_tls11_refused(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key)
    ctx = client_ctx(cert)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 needs level 0 to offer TLS 1.1
        except (ValueError, ssl.SSLError):
            return  # this Python/OpenSSL build cannot offer TLS 1.1 at all: nothing to check
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        raise AssertionError("a TLS 1.1 client was accepted")
    except ssl.SSLError as e:
        msg = str(e).upper()
        if "NO_PROTOCOLS_AVAILABLE" in msg or "NO PROTOCOLS AVAILABLE" in msg:
            return  # refused by our own client library before reaching the server: skip
        # the server answered with a protocol_version alert
        assert "PROTOCOL_VERSION" in msg or "PROTOCOL VERSION" in msg, e
    finally:
        raw.close()


def test_large_body_and_response(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key)
    blob = "".join(random.choice("abcdefghij") for _ in range(1000 * 1000))
    c = https(srv, cert)
    c.request("PUT", "/_cluster/settings?flat_settings=true",
              body=('{"transient":{"plugins.ml_commons.tls_blob":"%s"}}' % blob).encode(),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body[:300])
    c.request("GET", "/_cluster/settings?flat_settings=true")  # ~1 MB back on the same connection
    r = c.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body[:300])
    assert blob.encode() in body, len(body)
    c.close()


def test_pipelining(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key)
    data, checks, heads = _pipeline()
    s = tls_connect(srv, cert)
    s.sendall(data)  # all 20 requests in one go
    _check_pipeline(srv, Reader(s), checks, heads)
    s.close()
    # the same requests again, in random small TLS records
    data, checks, heads = _pipeline()
    s = tls_connect(srv, cert)
    i = 0
    while i < len(data):
        n = random.randint(1, 200)
        s.sendall(data[i:i + n])
        i += n
    _check_pipeline(srv, Reader(s), checks, heads)
    s.close()


def test_limits_413_431(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key, config={"http.max_content_length": "1kb"})
    s = tls_connect(srv, cert)
    rd = Reader(s)
    s.sendall(b"PUT /_cluster/settings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000\r\n\r\n")
    r = rd.response(timeout=3)
    assert r.status == 413 and r.headers.get("connection") == "close", r
    assert r.error()[0] == "content_too_long_exception", r
    assert rd.eof(timeout=3), "connection not closed after 413"
    s = tls_connect(srv, cert)
    rd = Reader(s)
    s.sendall(build("GET", "/", headers={"X-Big": "a" * 20000}))
    r = rd.response(timeout=3)
    assert r.status == 431, r
    assert rd.eof(timeout=3)
    # and the server still serves
    s = tls_connect(srv, cert)
    s.sendall(build("GET", "/"))
    assert Reader(s).response().status == 200
    s.close()


def test_expect_continue(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key)
    s = tls_connect(srv, cert)
    rd = Reader(s)
    body = ('{"transient":{"%s":42}}' % MML).encode()
    s.sendall(b"PUT /_cluster/settings?flat_settings=true HTTP/1.1\r\nHost: x\r\n"
              b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body))
    assert rd.response(timeout=3).status == 100
    s.sendall(body)
    r = rd.response()
    assert r.status == 200 and r.json["transient"] == {MML: "42"}, r
    s.close()


def test_connection_cap(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key, config={"http.max_connections": 1})
    first = tls_connect(srv, cert)
    first.sendall(build("GET", "/"))
    rd1 = Reader(first)
    assert rd1.response().status == 200
    second = tls_connect(srv, cert)  # the handshake completes, then the 429 arrives
    rd2 = Reader(second)
    r = rd2.response(timeout=3)
    assert r.status == 429 and r.error()[0] == "rejected_execution_exception", r
    assert rd2.eof(timeout=3)
    first.sendall(put_mml(5))
    assert rd1.response().status == 200
    first.close()


def test_handshake_timeout(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key, config={"http.request_timeout": "1s"})
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
    t0 = time.monotonic()
    assert s.recv(100) == b"", "unexpected bytes from the server"
    took = time.monotonic() - t0
    assert 0.5 < took < 5, "handshake deadline after %.1fs" % took
    s.close()


def test_graceful_stop_over_tls(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key)
    idle = tls_connect(srv, cert)
    idle.sendall(build("GET", "/"))
    assert Reader(idle).response().status == 200
    assert srv.stop() == 0
    assert idle.recv(100) == b""  # closed by the stop
    idle.close()


# ------------------------------------------------------------------------------------------------
# plain HTTP on the TLS port
# ------------------------------------------------------------------------------------------------

def test_plain_http_refused(h):
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key)
    for method in ("GET", "DELETE"):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(build(method, "/"))
        rd = Reader(s)
        r = rd.response(timeout=3)
        # decision: a plaintext 400 envelope telling the user to use https, then close (nginx)
        assert r.status == 400 and r.headers.get("connection") == "close", r
        assert "https://" in r.error()[1], r
        assert rd.eof(timeout=3)
    s = tls_connect(srv, cert)  # TLS clients are unaffected
    s.sendall(build("GET", "/"))
    assert Reader(s).response().status == 200
    s.close()


def test_curl(h):
    if shutil.which("curl") is None:
        return  # curl is not installed: nothing to check
    cert, key = make_cert(h, "a")
    srv = tls_server(h, cert, key)
    url = "https://127.0.0.1:%d/" % srv.port
    p = subprocess.run(["curl", "-sS", "--cacert", cert, url, url + "_cluster/settings"],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert b'"distribution":"mlrelay"' in p.stdout and b'"persistent"' in p.stdout, p.stdout
    p = subprocess.run(["curl", "-sS", "http://127.0.0.1:%d/" % srv.port],
                       capture_output=True, timeout=30)
    assert b"https://" in p.stdout, (p.returncode, p.stdout, p.stderr)


# ------------------------------------------------------------------------------------------------
# reload
# ------------------------------------------------------------------------------------------------

def test_sighup_reload(h):
    cert, key = make_cert(h, "live", org="first")
    srv = tls_server(h, cert, key)
    old = tls_connect(srv, cert)
    assert org_of(old) == "first"
    # a new certificate at the same paths; SIGHUP makes new connections use it
    cert2, key2 = make_cert(h, "next", org="second")
    shutil.copy(cert2, cert)
    shutil.copy(key2, key)
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, "tls certificate reloaded")
    new = tls_connect(srv, cert2)
    assert org_of(new) == "second"
    new.sendall(build("GET", "/"))
    assert Reader(new).response().status == 200
    # the connection opened before the reload keeps working with its session
    old.sendall(build("GET", "/"))
    assert Reader(old).response().status == 200
    old.close()
    # a broken certificate: the reload fails, is logged, and the current certificate stays
    with open(cert, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, "reload failed, still serving the previous certificate")
    assert "ERROR" in srv.log() or '"level":"error"' in srv.log(), srv.log()
    again = tls_connect(srv, cert2)
    assert org_of(again) == "second"
    again.sendall(build("GET", "/"))
    assert Reader(again).response().status == 200
    again.close()
    # a key that does not match: refused the same way
    shutil.copy(cert2, cert)
    make_cert(h, "other")
    shutil.copy(os.path.join(h.tmp, "other.key"), key)
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, "reload failed, still serving the previous certificate", count=2)
    assert "key values mismatch" in srv.log(), srv.log()
    assert org_of(tls_connect(srv, cert2)) == "second"
    new.close()


def test_sighup_without_tls(h):
    srv = h.server()
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, "TLS is not configured")
    assert srv.get("/").status == 200  # SIGHUP no longer terminates the process


# ------------------------------------------------------------------------------------------------
# configuration errors
# ------------------------------------------------------------------------------------------------

def test_only_one_of_cert_and_key_exit_2(h):
    cert, key = make_cert(h, "a")
    rc, out, err = run_binary(h, ["--tls-cert", cert])
    assert rc == 2, (rc, out, err)
    assert "tls.cert and tls.key must be set together" in err, err
    rc, out, err = run_binary(h, [], env={"MLRELAY_TLS_KEY": key})
    assert rc == 2 and "tls.cert is not" in err, (rc, err)


def test_bad_cert_or_key_exit_1(h):
    cert, key = make_cert(h, "a")
    _, other_key = make_cert(h, "b")
    rc, out, err = run_binary(h, ["--tls-cert", cert, "--tls-key", other_key])
    assert rc == 1, (rc, out, err)
    assert "key values mismatch" in err and other_key in err, err
    assert "listening" not in err, err
    missing = os.path.join(h.tmp, "missing.crt")
    rc, out, err = run_binary(h, ["--tls-cert", missing, "--tls-key", key])
    assert rc == 1 and missing in err and "No such file" in err, (rc, err)


# ------------------------------------------------------------------------------------------------
# the plaintext warning
# ------------------------------------------------------------------------------------------------

def test_warning_plaintext_non_loopback(h):
    """Spec §8: the warning is for users' passwords crossing the network in the clear."""
    users = {"MLRELAY_ADMIN_PASSWORD": "admin-pw"}
    srv = h.server(args=["--listen", "0.0.0.0:0"], env=users)
    assert "without TLS while users are configured" in srv.log(), srv.log()
    assert srv.get("/").status == 401
    no_users = h.server(args=["--listen", "0.0.0.0:0"])
    assert "without TLS" not in no_users.log(), no_users.log()
    plain_local = h.server(env=users)
    assert "without TLS" not in plain_local.log(), plain_local.log()
    cert, key = make_cert(h, "a")
    with_tls = tls_server(h, cert, key, args=["--listen", "0.0.0.0:0"], env=users)
    assert "without TLS" not in with_tls.log(), with_tls.log()
