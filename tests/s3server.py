"""A real S3 HTTP endpoint on 127.0.0.1: `moto_server` started as our own subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def moto_server(extra_env: dict | None = None):
    """Yield the endpoint URL; the server is terminated by its PID afterwards."""
    port = free_port()
    exe = shutil.which("moto_server")
    cmd = [exe] if exe else [sys.executable, "-m", "moto.server"]
    env = {**os.environ, **(extra_env or {})}
    proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("moto_server exited during start-up") from None
                time.sleep(0.2)
        else:
            raise RuntimeError("moto_server did not start within 30 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def storage_options(endpoint: str, key: str = "testing", secret: str = "testing") -> dict:
    return {"endpoint_url": endpoint, "key": key, "secret": secret, "client_kwargs": {"region_name": "us-east-1"}}
