"""Real processes and servers for end-to-end tests, all on 127.0.0.1: the fsbridge server as a
subprocess, and a fake Segment HTTP server that records what it receives."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
FSBRIDGE = [sys.executable, "-m", "fsbridge"]


class FakeSegment:
    """A fake Segment on 127.0.0.1 (optionally slow) that answers the scripted statuses, then 200,
    and records every message it accepted."""

    def __init__(self, delay: float = 0.0, script: list[int] | None = None, export: bytes | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self.script = list(script or [])
        self.lock = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                # Fullstory's segment export, for the job tests: the operation is done at once.
                if self.path.startswith("/operations/v1/"):
                    self._answer(200, b'{"state":"COMPLETED","results":{"searchExportId":"exp-1"}}')
                elif self.path.startswith("/search/v1/"):
                    self._answer(200, json.dumps({"location": f"{outer.url}/files/export.gz"}).encode())
                elif self.path.startswith("/files/") and export is not None:
                    self._answer(200, export, "application/gzip")
                else:
                    self._answer(404, b"{}")

            def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/segments/v1/exports":
                    self._answer(200, b'{"operationId":"op-1"}')
                    return
                time.sleep(delay)
                with outer.lock:
                    status = outer.script.pop(0) if outer.script else 200
                    if status == 200:
                        outer.messages.extend(json.loads(body)["batch"])
                        outer.lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"success":true}' if status == 200 else b'{"code":"invalid","message":"scripted"}')

            def log_message(self, *args: Any) -> None:
                pass

        class QuietServer(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client killed mid-request (the point of the test) breaks its pipe

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeSegment:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_until(self, predicate: Callable[[FakeSegment], bool], timeout: float) -> bool:
        """Block until `predicate(self)` holds after some message arrived, or `timeout` seconds pass."""
        with self.lock:
            return self.lock.wait_for(lambda: predicate(self), timeout=timeout)

    def clicks(self) -> list[dict[str, Any]]:
        """The tracks of the test's clicks (each marked in element_text), not the identifies the
        per-user aggregations add for them."""
        with self.lock:
            return [m for m in self.messages if "element_text" in m.get("properties", {})]

    def marks(self) -> Counter[str]:
        return Counter(m["properties"]["element_text"] for m in self.clicks())

    def message_ids(self) -> Counter[str]:
        return Counter(m["messageId"] for m in self.clicks())


class Server:
    def __init__(self, workdir: Path, env: dict[str, str], port: int, role: str = "all") -> None:
        self.workdir, self.env, self.port, self.role = workdir, env, port, role
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with (self.workdir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [*FSBRIDGE, "serve", "--port", str(self.port), "--role", self.role],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.workdir / "server.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError("fsbridge did not start within 30 s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def without_aggregations(config_dir: Path) -> None:
    """Switch Part 2's per-user aggregation flows off in a copied configuration (its `flows:`
    section is the file's last): tests of delivery count the tracks a click produces, and these
    flows add identifies to them."""
    path = config_dir / "fsbridge.yaml"
    flows = "".join(f"  {name}: {{enabled: false}}\n" for name in (
        "experience_at_risk", "frustration_traits", "health_score", "nps_follow_up"))  # fmt: skip
    path.write_text(path.read_text().rstrip("\n") + "\n" + flows)


def base_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a server under test: this process's, without any FSBRIDGE_* of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSBRIDGE_")}
    env |= {"FSBRIDGE_DATABASE_URL": f"sqlite:///{workdir / 'var' / 'fsbridge.db'}", "FSBRIDGE_LOG_FORMAT": "json"}
    return env | extra
