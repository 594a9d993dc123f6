"""The systems that watch a night, real and on 127.0.0.1: Debian's Prometheus Pushgateway started
as our own subprocess, and an HTTP receiver that keeps the OpenLineage events POSTed to it."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from s3server import free_port


def pushgateway_binary() -> str:
    """Debian's `prometheus-pushgateway` (the README's test command installs it). Missing where
    apt-get exists is a broken set-up, not a reason to skip; elsewhere the test is skipped."""
    exe = shutil.which("prometheus-pushgateway")
    if exe:
        return exe
    if shutil.which("apt-get"):
        pytest.fail("Debian's prometheus-pushgateway is not installed: apt-get install -y prometheus-pushgateway "
                    "(the README's test command does)")
    pytest.skip("no prometheus-pushgateway binary and no apt-get to install it (not a Debian machine)")


@contextmanager
def pushgateway():
    """Yield the Pushgateway's URL; it is terminated by its PID afterwards."""
    port = free_port()
    proc = subprocess.Popen([pushgateway_binary(), f"--web.listen-address=127.0.0.1:{port}",
                             "--persistence.file="],  # Debian's default keeps series in /var/lib across starts
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("the Pushgateway did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def scrape(url: str, grouping: tuple[str, ...] = ()) -> dict[tuple[str, tuple], float]:
    """The Pushgateway's mmbatch series: (name, sorted labels but the grouping's) → value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("mmbatch_night_"):
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("job", "output", "instance", *grouping)))
                out[(s.name, labels)] = s.value
    return out


@contextmanager
def lineage_receiver():
    """Yield (url, events): every JSON body POSTed to the server, in order."""
    events: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            events.append({"path": self.path, **json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
            self.send_response(201)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", events
    finally:
        server.shutdown()
        server.server_close()
