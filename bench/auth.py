#!/usr/bin/env python3
"""Authentication benchmark (issue 7 point 2): what HTTP Basic authentication costs per request.

Usage: bench/auth.py [--binary build/mlrelay] [--seconds 5] [--conns 16] [--runs 3]

Two mlrelay processes on fresh data dirs: one with no user (requests carry no credentials), one
with a user, queried with that user's credentials (the first request verifies the password with
PBKDF2, 600,000 iterations, and every later one hits the verified-credential cache: one HMAC).
wrk (one thread, keep-alive) measures GET / against each, interleaved, RUNS times; the script
prints requests/s per run, the medians and their ratio. Target: authenticated / unauthenticated
>= 0.9. Uses 127.0.0.1 only.
"""

import argparse
import base64
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ttl import start  # noqa: E402
from search import stop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(proc, port, seconds, conns, header=None):
    """(requests/s, mlrelay CPU microseconds per request)."""
    c0 = cpu_s(proc.pid)
    rps, n = wrk(port, seconds, conns, header)
    return rps, (cpu_s(proc.pid) - c0) * 1e6 / n


def wrk(port, seconds, conns, header=None):
    cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "http://127.0.0.1:%d/" % port]
    if header:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert non2xx is None, out
    return (float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            int(re.search(r"(\d+) requests in", out).group(1)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.path.join(ROOT, "build", "mlrelay"))
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="mlrelay-bench-")
    procs = []
    try:
        plain, plain_port = start(a.binary, os.path.join(tmp, "plain"), os.path.join(tmp, "l1"))
        procs.append(plain)
        authd, auth_port = start(a.binary, os.path.join(tmp, "auth"), os.path.join(tmp, "l2"))
        procs.append(authd)
        subprocess.run([a.binary, "users", "add", "bench", "--data-dir",
                        os.path.join(tmp, "auth")], input=b"bench-password\n", check=True,
                       capture_output=True)
        header = "Authorization: Basic " + base64.b64encode(b"bench:bench-password").decode()
        deadline = time.time() + 10
        while "1 users configured" not in open(os.path.join(tmp, "l2")).read():
            assert time.time() < deadline
            time.sleep(0.1)
        wrk(auth_port, 1, 1, header)  # verifies once; the rest are cache hits
        rows = []
        for run in range(1, a.runs + 1):
            p, pc = measure(plain, plain_port, a.seconds, a.conns)
            q, qc = measure(authd, auth_port, a.seconds, a.conns, header)
            rows.append((p, q, pc, qc))
            print("run %d: unauthenticated %.0f req/s (%.1f us CPU/req), authenticated %.0f req/s "
                  "(%.1f us CPU/req), ratio %.2f" % (run, p, pc, q, qc, q / p))
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        print("median: unauthenticated %.0f req/s (%.1f us CPU/req), authenticated %.0f req/s "
              "(%.1f us CPU/req); throughput ratio %.2f (target >= 0.9), CPU ratio %.2f"
              % (med[0], med[2], med[1], med[3], med[1] / med[0], med[2] / med[3]))
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
