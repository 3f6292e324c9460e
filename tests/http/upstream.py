"""A mock model provider for the black-box tests, on 127.0.0.1 (any free port).

It records every request it receives (method, path, headers, body) so tests can assert exactly
what mlrelay rendered and sent, and answers by path:

  /v1/chat/completions     OpenAI chat completion echoing the last message
  /v1/completions          OpenAI completion
  /v1/embeddings           OpenAI embeddings: one 3-float vector per input string
  /embed/cohere            Cohere v1 embeddings ("texts" -> "embeddings")
  /embed/titan             Bedrock Titan embedding ("inputText" -> "embedding")
  /embedbad/<code>         like /v1/embeddings, but answers <code> when an input contains "bad"
  /embedslow/<ms>          like /v1/embeddings, after sleeping <ms>
  /rerank                  Cohere rerank (reverse order, scores 1/(i+1))
  /echo                    {"method","path","headers","body"} of the request
  /status/<code>           that status with body {"message":"status <code>"}
  /empty/<code>            that status with an empty body
  /slow/<ms>               sleeps, then answers like /echo
  /flaky/<n>/<code>        the first n requests answer <code>, then 200 (per path)
  /text                    200 text/plain "plain words"
  /array                   200 JSON array [1,2,3]
  /retry-after/<s>         first request 429 with Retry-After: <s>, then 200
  /inflight/<ms>           like /slow, counting requests in progress (Upstream.inflight, and the
                           highest count seen in Upstream.max_inflight)
  /v1/batches              OpenAI batch API (also under /openai/v1/batches, so that a URL
                           naming "openai" gets mlrelay's synthesised status/cancel actions):
      POST /v1/batches               -> {"id":"batch_<n>","object":"batch","status":"validating"}
                                        The body's "mock" object steers the job: "steps" (status
                                        GETs answering in_progress before the outcome, default 1),
                                        "outcome" (default "completed"; e.g. "failed"),
                                        "status_error" (every status GET answers that code),
                                        "cancel_error" (cancel answers that code),
                                        "create_error" (this POST answers that code).
      GET  /v1/batches/<id>          -> in_progress `steps` times, then the outcome; after a
                                        cancel: cancelling once, then cancelled
      POST /v1/batches/<id>/cancel   -> {"status":"cancelling"}
Hostile upstreams (issue 8):
  /hang/<s>                reads the request, then answers nothing for <s> seconds
  /reset                   reads the request, then resets the connection (RST, no response)
  /huge/<mb>               200 application/json announcing and streaming <mb> MiB (until the
                           client stops reading); /huge/<mb>/chunked streams it chunked
  /drip/<ms>               200 with a 2 KiB JSON body sent one byte every <ms>
  /invalid                 200 application/json that is not JSON
  /ctype                   200 JSON body labelled text/html
  /redirect/<code>         <code> with Location: http://169.254.169.254/latest/meta-data/
Anything else is 404.
"""

import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def log_message(self, fmt, *args):  # keep test output clean
        pass

    def _read(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, ctype="application/json", extra=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        body = self._read()
        up = self.server.upstream
        rec = {"method": self.command, "path": self.path,
               "headers": {k.lower(): v for k, v in self.headers.items()},
               "body": body.decode("utf-8", "replace")}
        with up.lock:
            up.requests.append(rec)
            count = up.counts.get(self.path, 0) + 1
            up.counts[self.path] = count
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["openai", "v1", "batches"]:
            parts = parts[1:]
        route = getattr(self, "_r_" + parts[0].replace("-", "_"), None)
        if parts[:2] == ["v1", "batches"]:
            route = self._r_batches
        elif parts[:2] == ["v1", "chat"]:
            route = self._r_chat
        elif parts[:2] == ["v1", "completions"]:
            route = self._r_completions
        elif parts[:2] == ["v1", "embeddings"]:
            route = self._r_embeddings
        if route is None:
            self._send(404, {"message": "no such path"})
            return
        route(parts, parsed, rec, count)

    do_POST = do_GET = do_PUT = do_DELETE = _handle

    # -- routes --------------------------------------------------------------------------
    def _r_chat(self, parts, body, rec, count):
        msgs = (body or {}).get("messages") or [{"content": ""}]
        self._send(200, {"id": "chatcmpl-1", "object": "chat.completion",
                         "model": (body or {}).get("model"),
                         "choices": [{"index": 0, "message": {"role": "assistant",
                                                               "content": "echo: %s" %
                                                               msgs[-1].get("content")}}]})

    def _r_completions(self, parts, body, rec, count):
        self._send(200, {"id": "cmpl-1", "choices": [{"text": "This is indeed a test"}]})

    def _r_embeddings(self, parts, body, rec, count):
        inputs = (body or {}).get("input") or []
        if isinstance(inputs, str):
            inputs = [inputs]
        data = [{"object": "embedding", "index": i,
                 "embedding": [float(len(t)), 0.5, -0.0043460787]} for i, t in enumerate(inputs)]
        self._send(200, {"object": "list", "data": data})

    def _r_embed(self, parts, body, rec, count):
        if parts[1:] == ["cohere"]:
            texts = (body or {}).get("texts") or []
            self._send(200, {"embeddings": [[float(len(t)), 1.5] for t in texts]})
        else:
            self._send(200, {"embedding": [float(len((body or {}).get("inputText", ""))), 2.5]})

    def _r_embedbad(self, parts, body, rec, count):
        if any("bad" in t for t in (body or {}).get("input") or []):
            self._send(int(parts[1]), {"message": "cannot embed a bad doc"})
        else:
            self._r_embeddings(parts, body, rec, count)

    def _r_embedslow(self, parts, body, rec, count):
        time.sleep(int(parts[1]) / 1000.0)
        self._r_embeddings(parts, body, rec, count)

    def _r_rerank(self, parts, body, rec, count):
        docs = (body or {}).get("documents") or []
        res = [{"index": i, "relevance_score": 1.0 / (i + 1)} for i in reversed(range(len(docs)))]
        self._send(200, {"results": res})

    def _r_echo(self, parts, body, rec, count):
        self._send(200, rec)

    def _r_status(self, parts, body, rec, count):
        code = int(parts[1])
        self._send(code, {"message": "status %d" % code})

    def _r_empty(self, parts, body, rec, count):
        self._send(int(parts[1]), b"")

    def _r_slow(self, parts, body, rec, count):
        time.sleep(int(parts[1]) / 1000.0)
        self._send(200, rec)

    def _r_flaky(self, parts, body, rec, count):
        n, code = int(parts[1]), int(parts[2])
        if count <= n:
            self._send(code, {"message": "try again"})
        else:
            self._send(200, {"ok": True, "attempt": count})

    def _r_batches(self, parts, body, rec, count):
        up = self.server.upstream
        if len(parts) == 2 and self.command == "POST":
            mock = (body or {}).get("mock") or {}
            if mock.get("create_error"):
                self._send(int(mock["create_error"]), {"error": {"message": "rejected"}})
                return
            with up.lock:
                up.batch_seq += 1
                job = {"id": "batch_%d" % up.batch_seq, "object": "batch",
                       "endpoint": (body or {}).get("endpoint"),
                       "input_file_id": (body or {}).get("input_file_id"),
                       "completion_window": "24h", "status": "validating",
                       "created_at": int(time.time())}
                up.batches[job["id"]] = {"job": dict(job), "mock": mock, "gets": 0,
                                         "cancelled": 0}
            self._send(200, job)
            return
        with up.lock:
            b = up.batches.get(parts[2]) if len(parts) > 2 else None
            if b is None:
                self._send(404, {"error": {"message": "No batch found"}})
                return
            mock = b["mock"]
            if len(parts) == 4 and parts[3] == "cancel" and self.command == "POST":
                if mock.get("cancel_error"):
                    self._send(int(mock["cancel_error"]), {"error": {"message": "cannot"}})
                    return
                b["cancelled"] = 1
                job = dict(b["job"], status="cancelling")
                self._send(200, job)
                return
            if len(parts) != 3 or self.command != "GET":
                self._send(404, {"message": "no such path"})
                return
            if mock.get("status_error"):
                self._send(int(mock["status_error"]), {"error": {"message": "unavailable"}})
                return
            b["gets"] += 1
            if b["cancelled"]:
                status = "cancelling" if b["cancelled"] == 1 else "cancelled"
                b["cancelled"] += 1
            elif b["gets"] <= int(mock.get("steps", 1)):
                status = "in_progress"
            else:
                status = mock.get("outcome", "completed")
            job = dict(b["job"], status=status)
            if status == "completed":
                job["output_file_id"] = "file-out-" + job["id"]
            self._send(200, job)

    def _r_text(self, parts, body, rec, count):
        self._send(200, b"plain words", "text/plain")

    def _r_array(self, parts, body, rec, count):
        self._send(200, [1, 2, 3])

    def _r_retry_after(self, parts, body, rec, count):
        if count == 1:
            self._send(429, {"message": "slow down"}, extra={"Retry-After": parts[1]})
        else:
            self._send(200, {"ok": True, "attempt": count})

    def _r_inflight(self, parts, body, rec, count):
        up = self.server.upstream
        with up.lock:
            up.inflight += 1
            up.max_inflight = max(up.max_inflight, up.inflight)
        try:
            time.sleep(int(parts[1]) / 1000.0)
        finally:
            with up.lock:
                up.inflight -= 1
        self._send(200, rec)

    # -- hostile routes (issue 8) ------------------------------------------------------------
    def _r_hang(self, parts, body, rec, count):
        time.sleep(float(parts[1]))
        self.close_connection = True

    def _r_reset(self, parts, body, rec, count):
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _r_huge(self, parts, body, rec, count):
        total = int(parts[1]) << 20
        chunked = len(parts) > 2 and parts[2] == "chunked"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        block = b"[" + b"0," * 32767 + b"0"  # 64 KiB of a JSON-looking array that never closes
        sent = 0
        self.close_connection = True
        try:
            while sent < total:
                data = block[:min(len(block), total - sent)]
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    self.wfile.write(data)
                sent += len(data)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client stopped reading, as it should
        with self.server.upstream.lock:
            self.server.upstream.huge_sent = sent

    def _r_drip(self, parts, body, rec, count):
        data = json.dumps({"drip": "x" * 2040}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.close_connection = True
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(int(parts[1]) / 1000.0)
        except OSError:
            pass

    def _r_invalid(self, parts, body, rec, count):
        self._send(200, b'{"choices": [not json', ctype="application/json")

    def _r_ctype(self, parts, body, rec, count):
        self._send(200, {"ok": True}, ctype="text/html; charset=utf-8")

    def _r_redirect(self, parts, body, rec, count):
        self._send(int(parts[1]), {"message": "moved"},
                   extra={"Location": "http://169.254.169.254/latest/meta-data/"})


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # many concurrent connects must not overflow the accept backlog

    def handle_error(self, request, client_address):
        # A client that vanishes mid-request (mlrelay killed with -9 by a test) is expected;
        # anything else is printed as usual.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            ThreadingHTTPServer.handle_error(self, request, client_address)


class Upstream:
    """Starts the mock on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, port=0):
        self.requests = []
        self.counts = {}
        self.inflight = 0
        self.max_inflight = 0
        self.batches = {}
        self.batch_seq = 0
        self.huge_sent = 0
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.upstream = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.port

    def last(self):
        with self.lock:
            return self.requests[-1] if self.requests else None

    def count(self):
        with self.lock:
            return len(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    # A stand-alone mock model for trying mlrelay by hand: python3 tests/http/upstream.py 8080
    import sys
    mock = Upstream(int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
    print("mock model listening on %s" % mock.endpoint, flush=True)
    mock.thread.join()
