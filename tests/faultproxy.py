"""A fault-injecting HTTP proxy in front of the moto S3 server, on 127.0.0.1, for store faults
beyond 503: response bodies cut short (the connection closed mid-GET), connection resets, and
slow responses. Faults are drawn from a seeded generator, so a run is repeatable; `counts` says
how many requests each fault hit.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}


class FaultPlan:
    """Which requests fail how: `truncate` of object GETs are cut mid-body, `reset` of all requests
    are reset before any response, `slow` are delayed `slow_s` (disjoint shares of one roll)."""

    def __init__(self, truncate: float = 0.0, reset: float = 0.0, slow: float = 0.0, slow_s: float = 2.0,
                 seed: int = 0):
        self.truncate, self.reset, self.slow, self.slow_s = truncate, reset, slow, slow_s
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "truncate": 0, "reset": 0, "slow": 0}

    def draw(self, method: str) -> tuple[str | None, float]:
        """The fault for a request before it is forwarded (reset, slow), and its roll: a GET whose
        response turns out to be an object body is cut short when the roll is below `truncate`."""
        with self.lock:
            self.counts["requests"] += 1
            roll = self.rng.random()
            fault = None
            if self.truncate <= roll < self.truncate + self.reset:
                fault = "reset"
            elif self.truncate + self.reset <= roll < self.truncate + self.reset + self.slow:
                fault = "slow"
            if fault:
                self.counts[fault] += 1
            return fault, roll

    def cut(self, method: str, status: int, content_type: str, roll: float) -> bool:
        """Cut this response short? Object bodies of GETs only (listings are XML)."""
        if method == "GET" and status in (200, 206) and "xml" not in content_type and roll < self.truncate:
            with self.lock:
                self.counts["truncate"] += 1
            return True
        return False


def _handler(upstream: str, plan: FaultPlan):
    host, port = urlsplit(upstream).hostname, urlsplit(upstream).port

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reset(self) -> None:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _forward(self) -> None:
            body = self._body()
            fault, roll = plan.draw(self.command)
            if fault == "reset":
                return self._reset()
            if fault == "slow":
                time.sleep(plan.slow_s)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
                # urllib/http.client add a form type otherwise, and moto then parses the body away
                headers.setdefault("Content-Type", "application/octet-stream")
            conn = http.client.HTTPConnection(host, port, timeout=60)
            try:
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            finally:
                conn.close()
            self.send_response_only(resp.status, resp.reason)
            head = self.command == "HEAD"  # its Content-Length is the object's, with no body
            for k, v in resp.getheaders():
                if k.lower() not in HOP_HEADERS and (head or k.lower() != "content-length"):
                    self.send_header(k, v)
            if not head:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if len(data) > 1 and plan.cut(self.command, resp.status, resp.getheader("Content-Type") or "", roll):
                self.wfile.write(data[: len(data) // 2])  # the connection closes mid-body
                self.wfile.flush()
                return self._reset()
            if not head:
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    return Handler


@contextmanager
def fault_proxy(upstream: str, plan: FaultPlan):
    """Yield the proxy's endpoint URL (127.0.0.1); stopped afterwards."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, plan))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fault-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
