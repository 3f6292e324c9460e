"""Security (spec README §8; reference §3.1, §4.1, §12, §13; issue 7): users and HTTP Basic
authentication, model and connector access control (a matrix of users x access modes x
operations), master key rotation and a scan for planted secrets.

Users are made with the real CLI (`mlrelay users add NAME`, password on stdin) against the data
directory of a running server, which picks them up within a second.
"""

import base64
import glob
import json
import os
import time

from test_predict import (CHAT_BODY, ML, SETTINGS, connector, create_connector, relay,
                          put_settings)
from test_resources import pg_rows

PW = {"admin": "admin-pw-1", "alice": "alice-pw-1", "bob": "bob-pw-1", "carol": "carol-pw-1"}
ROLES = {"alice": "IT", "bob": "IT,HR", "carol": "HR"}
MODEL_AC = "plugins.ml_commons.model_access_control_enabled"
CONNECTOR_AC = "plugins.ml_commons.connector_access_control_enabled"


def auth(user, pw=None):
    raw = ("%s:%s" % (user, pw if pw is not None else PW[user])).encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


class As:
    """Requests on server @s as @user."""

    def __init__(self, s, user):
        self.s, self.h = s, auth(user)

    def get(self, path, **kw):
        return self.s.get(path, headers=self.h, **kw)

    def post(self, path, body=None):
        return self.s.post(path, body, headers=self.h)

    def put(self, path, body=None):
        return self.s.put(path, body, headers=self.h)

    def delete(self, path):
        return self.s.delete(path, headers=self.h)


def store_args(s):
    """The options that point a `mlrelay` subcommand at server @s's state: its data directory
    and, in PostgreSQL mode, its database (the data directory then holds only the key files)."""
    url = s.store_url()
    return ["--data-dir", s.data_dir] + (["--store", url] if url else [])


def add_user(h, s, name, roles=None, backend=None):
    args = ["users", "add", name] + store_args(s)
    if roles:
        args += ["--roles", roles]
    if backend:
        args += ["--backend-roles", backend]
    code, out, err = h.run(args, stdin=(PW[name] + "\n").encode(), timeout=60)
    assert code == 0, (code, out, err)
    return out


def wait_auth_required(s, timeout=5):
    """The server picks up users within a second: wait until anonymous requests get 401."""
    deadline = time.time() + timeout
    while s.get("/").status != 401:
        assert time.time() < deadline
        time.sleep(0.1)


def wait_users(s, n, timeout=5):
    """Until the server has loaded @n users (it polls their version every second)."""
    deadline = time.time() + timeout
    while "%d users configured" % n not in s.log():
        assert time.time() < deadline, s.log()
        time.sleep(0.05)


def users_and_server(h, s):
    """admin (all_access) and alice/bob/carol with their backend roles."""
    add_user(h, s, "admin", roles="all_access")
    for name, br in ROLES.items():
        add_user(h, s, name, backend=br)
    wait_users(s, 4)
    return {name: As(s, name) for name in PW}


def expect(r, status, reason=None):
    assert r.status == status, (status, r)
    if reason is not None:
        assert r.json["error"]["reason"] == reason, (reason, r.json)


# -- users and authentication ---------------------------------------------------------------------

def test_users_cli(h):
    s = h.server()
    out = add_user(h, s, "alice", backend="IT, ops")
    assert 'added user alice (backend_roles ["IT","ops"], roles [])' in out, out
    code, out, err = h.run(["users", "add", "alice"] + store_args(s), stdin=b"x\n")
    assert code == 1 and "a user of that name exists" in err, (code, err)
    code, out, err = h.run(["users", "list"] + store_args(s))
    assert code == 0 and out == 'alice backend_roles=["IT","ops"] roles=[]\n', out
    assert "pbkdf2" not in out and PW["alice"] not in out
    for bad in (["users"], ["users", "add"], ["users", "frob"], ["users", "list", "x"],
                ["users", "add", "a:b"], ["users", "add", ""]):
        code, out, err = h.run(bad + store_args(s), stdin=b"pw\n")
        assert code == 2, (bad, code, err)
    code, out, err = h.run(["users", "add", "dave"] + store_args(s), stdin=b"\n")
    assert code == 1 and "password" in err, err
    code, out, err = h.run(["users", "delete", "alice"] + store_args(s))
    assert code == 0 and out == "deleted user alice\n", (out, err)
    code, out, err = h.run(["users", "delete", "alice"] + store_args(s))
    assert code == 1 and "no such user" in err


def test_basic_auth_once_users_exist(h):
    s = h.server()
    assert s.get("/").status == 200  # no users: loopback clients need no credentials
    add_user(h, s, "alice", backend="IT")
    wait_auth_required(s)
    r = s.get("/")
    expect(r, 401, "Unauthorized")
    assert r.headers["www-authenticate"] == 'Basic realm="mlrelay"', r.headers
    expect(s.get(ML + "/models/x"), 401)  # before routing: nothing is revealed
    expect(s.get("/no/such/path"), 401)
    expect(s.get("/", headers=auth("alice", "wrong")), 401)
    expect(s.get("/", headers=auth("mallory", "x")), 401)
    expect(s.get("/", headers={"Authorization": "Basic !!!"}), 401)
    expect(s.get("/", headers={"Authorization": "Bearer abc"}), 401)
    assert s.get("/", headers=auth("alice")).status == 200
    t = time.time()
    for _ in range(50):  # cached: no PBKDF2 per request
        assert s.get("/", headers=auth("alice")).status == 200
    assert time.time() - t < 2.0
    code, _, _ = h.run(["users", "delete", "alice"] + store_args(s))
    assert code == 0
    deadline = time.time() + 5
    while s.get("/").status != 200:  # no users left: protected mode again
        assert time.time() < deadline
        time.sleep(0.1)


def test_unauthenticated_body_is_not_read(h):
    """With users anyone may connect: a request without credentials is refused as soon as its
    headers arrive, before a (here 5 MB) body is read or 100-continue is sent."""
    s = h.server()
    add_user(h, s, "alice")
    wait_auth_required(s)
    sock = s.socket()
    sock.sendall(b"POST /_plugins/_ml/models/_register HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 5000000\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    head = data.split(b"\r\n\r\n")[0].decode().lower()
    assert head.startswith("http/1.1 401"), head
    assert 'www-authenticate: basic realm="mlrelay"' in head, head
    sock.close()


def test_failed_logins_are_rate_limited(h):
    s = h.server()
    add_user(h, s, "alice")
    add_user(h, s, "bob")
    wait_users(s, 2)
    assert s.get("/", headers=auth("bob")).status == 200  # verified before the attack: cached
    for _ in range(10):
        expect(s.get("/", headers=auth("alice", "guess")), 401)
    r = s.get("/", headers=auth("alice"))  # not cached yet: refused while the address is limited
    expect(r, 429, "Too many failed logins from this address; try again later")
    assert s.get("/", headers=auth("bob")).status == 200  # a cached login still passes
    assert "authentication failed" in s.log() and "guess" not in s.log()


def test_admin_password_bootstrap(h):
    s = h.server(env={"MLRELAY_ADMIN_PASSWORD": PW["admin"]})
    expect(s.get("/"), 401)
    assert s.get("/", headers=auth("admin")).status == 200
    code, out, _ = h.run(["users", "list"] + store_args(s))
    assert out == 'admin backend_roles=[] roles=["all_access"]\n', out
    s.stop()
    s.env = {}
    s.start()  # the user stays; the variable only acts when there is none
    expect(s.get("/"), 401)
    assert s.get("/", headers=auth("admin")).status == 200


def test_access_control_settings_need_users(h):
    s = h.server()
    r = s.put(SETTINGS, {"persistent": {MODEL_AC: True}})
    expect(r, 400, "You cannot specify model access control parameters because the Security "
                   "plugin or model access control is disabled on your cluster.")
    add_user(h, s, "admin", roles="all_access")
    wait_auth_required(s)
    assert As(s, "admin").put(SETTINGS, {"persistent": {MODEL_AC: True}}).status == 200


# -- model access control -------------------------------------------------------------------------

def setup_groups(s, u, up):
    """alice's public, private and restricted ([IT]) groups, each with one model."""
    put_settings_as(u["admin"], {MODEL_AC: True})
    cid = create_connector_as(u["admin"], connector(up, "v1/chat/completions", body=CHAT_BODY))
    out = {}
    for mode in ("public", "private", "restricted"):
        body = {"name": "g-" + mode, "access_mode": mode}
        if mode == "restricted":
            body["backend_roles"] = ["IT"]
        r = u["alice"].post(ML + "/model_groups/_register", body)
        assert r.status == 200, r
        gid = r.json["model_group_id"]
        r = u["alice"].post(ML + "/models/_register", {"name": "m-" + mode,
                                                        "function_name": "remote",
                                                        "model_group_id": gid,
                                                        "connector_id": cid})
        assert r.status == 200, r
        out[mode] = (gid, r.json["model_id"])
    return cid, out


def put_settings_as(a, persistent):
    assert a.put(SETTINGS, {"persistent": persistent}).status == 200


def create_connector_as(a, body):
    r = a.post(ML + "/connectors/_create", body)
    assert r.status == 200, r
    return r.json["connector_id"]


# who may use a group of each mode (reference §12.2): owner alice, IT sharer bob, HR-only carol
ALLOWED = {"public": {"alice", "bob", "carol", "admin"},
           "private": {"alice", "admin"},
           "restricted": {"alice", "bob", "admin"}}
CHAT = {"parameters": {"messages": [{"role": "user", "content": "hi"}]}}


def test_model_access_matrix(h):
    with relay(h) as (s, up):
        u = users_and_server(h, s)
        cid, groups = setup_groups(s, u, up)
        no_model = "User doesn't have privilege to perform this operation on this model"
        for mode, (gid, mid) in groups.items():
            for name, a in u.items():
                ok = name in ALLOWED[mode]
                ctx = (mode, name)
                r = a.get(ML + "/model_groups/" + gid)
                assert r.status == (200 if ok else 403), (ctx, r)
                if not ok:
                    expect(r, 403, "User doesn't have privilege to perform this operation on "
                                   "this model group")
                r = a.get(ML + "/models/" + mid)
                assert r.status == (200 if ok else 403), (ctx, r)
                if not ok:
                    expect(r, 403, no_model)
                r = a.post(ML + "/models/%s/_predict" % mid, CHAT)
                assert r.status == (200 if ok else 403), (ctx, r)
                if not ok:
                    expect(r, 403, "User Doesn't have privilege to perform this operation on "
                                   "this model")
                r = a.post(ML + "/models/%s/_deploy" % mid)
                assert r.status == (200 if ok else 403), (ctx, r)
                r = a.put(ML + "/models/" + mid, {"description": "by " + name})
                assert r.status == (200 if ok else 403), (ctx, r)
                if not ok:
                    expect(r, 403, "User Doesn't have privilege to perform this operation on "
                                   "this model, model ID" + mid)
                r = a.post(ML + "/models/%s/_undeploy" % mid)
                assert r.status == (200 if ok else 403), (ctx, r)
                if not ok:
                    expect(r, 403, "User doesn't have privilege to perform this operation on "
                                   "this model, model ID " + mid)
                r = a.post(ML + "/models/_undeploy", {"model_ids": [mid]})
                assert r.status == (200 if ok else 403), (ctx, r)
                r = a.post(ML + "/models/_register", {"name": "v2-" + name,
                                                      "function_name": "remote",
                                                      "model_group_id": gid,
                                                      "connector_id": cid})
                assert r.status == (200 if ok else 400), (ctx, r)
                if not ok:
                    expect(r, 400, "You don't have permissions to perform this operation on "
                                   "this model.")
                r = a.post(ML + "/models/%s/_batch_ingest" % mid,
                           {"inputs": [CHAT], "batch_size": 1})
                assert r.status == (200 if ok else 403), (ctx, r)


def search_names(a, index):
    r = a.post(ML + "/%s/_search" % index, {"query": {"match_all": {}}, "size": 100,
                                            "track_total_hits": True})
    assert r.status == 200, r
    names = sorted(hit["_source"]["name"] for hit in r.json["hits"]["hits"])
    assert r.json["hits"]["total"]["value"] == len(names), r.json["hits"]["total"]
    return names


def test_model_access_search_filtering(h):
    with relay(h) as (s, up):
        u = users_and_server(h, s)
        setup_groups(s, u, up)
        want = {name: sorted("g-" + m for m in ALLOWED if name in ALLOWED[m]) for name in u}
        for name, a in u.items():
            assert search_names(a, "model_groups") == want[name], name
            assert search_names(a, "models") == [g.replace("g-", "m-") for g in want[name]], name


def test_model_group_access_rules(h):
    with relay(h) as (s, up):
        u = users_and_server(h, s)
        put_settings_as(u["admin"], {MODEL_AC: True})
        reg = ML + "/model_groups/_register"
        cases = [
            ("carol", {"name": "x1", "access_mode": "restricted", "backend_roles": ["IT"]},
             "You don't have the backend roles specified."),
            ("alice", {"name": "x2", "access_mode": "public", "backend_roles": ["IT"]},
             "You can specify backend roles only for a model group with the restricted access "
             "mode."),
            ("admin", {"name": "x3", "access_mode": "restricted", "add_all_backend_roles": True},
             "Admin users cannot add all backend roles to a model group."),
            ("alice", {"name": "x4", "access_mode": "restricted"},
             "You must specify one or more backend roles or add all backend roles to register "
             "a restricted model group."),
            ("alice", {"name": "x5", "backend_roles": ["IT"], "add_all_backend_roles": True},
             "You cannot specify backend roles and add all backend roles at the same time."),
            ("admin", {"name": "x6", "access_mode": "restricted"},
             "You must specify one or more backend roles or add all backend roles to register "
             "a restricted model group."),
        ]
        for who, body, reason in cases:
            expect(u[who].post(reg, body), 400, reason)
        # Defaults: no mode -> private; roles alone -> restricted; add_all copies the roles.
        r = u["bob"].post(reg, {"name": "b1"})
        g = u["bob"].get(ML + "/model_groups/" + r.json["model_group_id"]).json
        assert g["access"] == "private" and g["owner"]["name"] == "bob", g
        assert g["owner"]["backend_roles"] == ["IT", "HR"], g
        r = u["bob"].post(reg, {"name": "b-all", "add_all_backend_roles": True})
        g = u["bob"].get(ML + "/model_groups/" + r.json["model_group_id"]).json
        assert g["access"] == "restricted" and g["backend_roles"] == ["IT", "HR"], g
        r = u["bob"].post(reg, {"name": "b2", "backend_roles": ["IT"]})
        gid = r.json["model_group_id"]
        # Sharers may rename; only the owner or an admin may change access.
        assert u["alice"].put(ML + "/model_groups/" + gid, {"name": "b2-renamed"}).status == 200
        expect(u["alice"].put(ML + "/model_groups/" + gid, {"access_mode": "public"}), 400,
               "Only owner or admin can update access control data.")
        expect(u["carol"].put(ML + "/model_groups/" + gid, {"name": "nope"}), 403)
        expect(u["bob"].put(ML + "/model_groups/" + gid, {"backend_roles": ["OPS"]}), 400,
               "You don't have the specified backend role to update this model group. For more "
               "information, contact your administrator.")
        assert u["bob"].put(ML + "/model_groups/" + gid, {"access_mode": "public"}).status == 200
        g = u["carol"].get(ML + "/model_groups/" + gid).json
        assert g["access"] == "public" and "backend_roles" not in g, g
        expect(u["carol"].delete(ML + "/model_groups/" + u["bob"].post(
            reg, {"name": "b3"}).json["model_group_id"]), 403,
            "User doesn't have privilege to delete this model group")


# -- connector access control ---------------------------------------------------------------------

def test_connector_access_control(h):
    with relay(h) as (s, up):
        u = users_and_server(h, s)
        put_settings_as(u["admin"], {CONNECTOR_AC: True})
        body = connector(up, "v1/chat/completions", body=CHAT_BODY)
        private = create_connector_as(u["alice"], dict(body, name="c-private"))
        restricted = create_connector_as(u["alice"], dict(body, name="c-restricted",
                                                          backend_roles=["IT"]))
        public = create_connector_as(u["alice"], dict(body, name="c-public", access_mode="public"))
        c = u["admin"].get(ML + "/connectors/" + restricted).json
        assert c["access"] == "restricted" and c["backend_roles"] == ["IT"], c
        assert c["owner"]["name"] == "alice" and "credential" not in c, c
        allowed = {private: {"alice", "admin"}, restricted: {"alice", "bob", "admin"},
                   public: {"alice", "bob", "carol", "admin"}}
        for cid, who in allowed.items():
            for name, a in u.items():
                ok = name in who
                r = a.get(ML + "/connectors/" + cid)
                assert r.status == (200 if ok else 403), (cid, name, r)
                if not ok:
                    expect(r, 403, "You don't have permission to access this connector")
                r = a.post(ML + "/models/_register", {"name": "m", "function_name": "remote",
                                                      "connector_id": cid})
                assert r.status == (200 if ok else 400), (cid, name, r)
                if not ok:
                    expect(r, 400, "You don't have permission to use the connector provided, "
                                   "connector id: " + cid)
                r = a.put(ML + "/connectors/" + cid, {"description": "x"})
                if not ok:
                    expect(r, 400, "You don't have permission to update the connector, "
                                   "connector id: " + cid)
        for name, a in u.items():
            names = search_names(a, "connectors")
            want = sorted(n for n, cid in (("c-private", private), ("c-restricted", restricted),
                                            ("c-public", public)) if name in allowed[cid])
            assert names == want, (name, names)
        expect(u["carol"].delete(ML + "/connectors/" + private), 403,
               "You are not allowed to delete this connector")
        rules = [("admin", {"add_all_backend_roles": True}, "Admin can't add all backend roles"),
                 ("alice", {"access_mode": "private", "backend_roles": ["IT"]},
                  "You can specify backend roles only for a connector with the restricted access "
                  "mode."),
                 ("alice", {"access_mode": "restricted"},
                  "You must specify at least one backend role or make the connector "
                  "public/private for registering it."),
                 ("carol", {"backend_roles": ["IT"]}, "You don't have the backend roles "
                                                      "specified.")]
        for who, extra, reason in rules:
            expect(u[who].post(ML + "/connectors/_create", dict(body, **extra)), 400, reason)


# -- secrets --------------------------------------------------------------------------------------

SECRET = "sk-PLANTED-0123456789abcdef"


def test_master_key_rotation(h):
    with relay(h) as (s, up):
        cid = create_connector(s, connector(up, "v1/chat/completions", body=CHAT_BODY,
                                            credential={"key": SECRET}))
        r = s.post(ML + "/models/_register?deploy=true", {"name": "m", "function_name": "remote",
                                                          "connector_id": cid})
        mid = r.json["model_id"]
        assert s.post(ML + "/models/%s/_predict" % mid, CHAT).status == 200
        code, _, err = h.run(["rotate-master-key"] + store_args(s))
        assert code == 1 and "stop it first" in err, err  # the server holds the data dir
        old = open(os.path.join(s.data_dir, "master.key")).read()
        s.stop()
        code, out, err = h.run(["rotate-master-key"] + store_args(s))
        assert code == 0 and "re-encrypted" in out, (out, err)
        assert open(os.path.join(s.data_dir, "master.key")).read() != old
        assert not os.path.exists(os.path.join(s.data_dir, "master.key.new"))
        s.start()  # redeploys with the new key
        assert s.post(ML + "/models/%s/_predict" % mid, CHAT).status == 200
        assert up.last()["headers"]["authorization"] == "Bearer " + SECRET


def test_interrupted_rotation_is_rolled_back(h):
    with relay(h) as (s, up):
        cid = create_connector(s, connector(up, "v1/chat/completions", body=CHAT_BODY,
                                            credential={"key": SECRET}))
        s.stop()
        staged = os.path.join(s.data_dir, "master.key.new")  # staged, never committed
        with open(staged, "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        os.chmod(staged, 0o600)
        s.start()
        assert not os.path.exists(staged)
        assert "rotation was rolled back" in s.log()
        r = s.post(ML + "/models/_register?deploy=true", {"name": "m", "function_name": "remote",
                                                          "connector_id": cid})
        assert s.post(ML + "/models/%s/_predict" % r.json["model_id"], CHAT).status == 200


def test_planted_secrets_appear_nowhere(h):
    """A credential and a password, planted and used, are in no response, log line (debug
    level, JSON) or database page."""
    with relay(h, args=("--log-level", "debug", "--log-format", "json")) as (s, up):
        u = users_and_server(h, s)
        a = u["admin"]
        body = connector(up, "v1/chat/completions", body=CHAT_BODY, credential={"key": SECRET})
        cid = create_connector_as(a, body)
        responses = [a.get(ML + "/connectors/" + cid).body,
                     a.post(ML + "/connectors/_search", {}).body]
        r = a.post(ML + "/models/_register?deploy=true", {"name": "m", "function_name": "remote",
                                                          "connector": body})
        mid = r.json["model_id"]
        for path, b in ((ML + "/models/%s/_predict" % mid, CHAT),
                        (ML + "/models/%s/_predict" % mid, {"parameters": {}}),
                        (ML + "/models/_search", {})):
            responses.append(a.post(path, b).body)
        responses.append(a.get(ML + "/models/" + mid).body)
        responses.append(s.get("/", headers=auth("alice", PW["alice"] + "x")).body)
        assert up.last()["headers"]["authorization"] == "Bearer " + SECRET  # it was used
        s.stop()
        needles = [SECRET.encode()] + [p.encode() for p in PW.values()] + \
            [base64.b64encode(("%s:%s" % (n, p)).encode()) for n, p in PW.items()]
        for blob in responses:
            for n in needles:
                assert n not in blob, (n, blob[:200])
        logtext = s.log().encode()
        for n in needles:
            assert n not in logtext, n
            for name, data in stored_bytes(s):
                assert n not in data, (n, name)


def stored_bytes(s):
    """What server @s keeps, as (name, bytes) pairs: SQLite's files (database, WAL), or in
    PostgreSQL mode every row of every table, as text."""
    if s.store_url() is not None:
        return pg_rows(s)
    files = glob.glob(os.path.join(s.data_dir, "mlrelay.db*"))
    assert files
    return [(f, open(f, "rb").read()) for f in files]
