"""Helpers shared by the Drive benchmarks (bench/drive_*.py): a project whose
remote hub is a folder on the local fake Drive v3 server (orchestrator/sandbox/drive), the
real CLI and daemon, real worker processes, and a counting relay that tells one
client's requests from the others'.

Everything runs on 127.0.0.1; the fake is started in-process by each benchmark.
"""

from __future__ import annotations

import http.client
import statistics
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.sandbox.drive import route_label
from tests.drive_project import DRIVE_ENV, DriveProject

__all__ = ["DRIVE_ENV", "CountingRelay", "DriveProject", "mb", "median", "minus",
           "print_routes", "wait_for"]



def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")


# ---- per-client accounting ----------------------------------------------------------

class CountingRelay:
    """A plain HTTP relay in front of the fake Drive that counts the requests and
    body bytes of the clients pointed at it (per route, as the fake does), so a
    benchmark can split the fake's totals between, say, the daemon and a worker.
    The Host header is passed on, so resumable-upload session URLs come back to
    the relay too."""

    def __init__(self, upstream_host: str, upstream_port: int,
                 namer: Callable[[str], str | None] | None = None) -> None:
        self._lock = threading.Lock()
        self._namer = namer
        self._sessions: dict[str, str] = {}  # upload_id → file name
        self.reset()
        relay = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                conn = getattr(self, "_up", None)
                if conn is None:
                    conn = self._up = http.client.HTTPConnection(upstream_host, upstream_port,
                                                                 timeout=120)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "keep-alive", "content-length")}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                relay.count(self.command, self.path, self.headers.get("X-HTTP-Method-Override"),
                            len(body), len(data))
                relay.attribute(self.path, body, data, resp.getheader("Location"))
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "content-length",
                                         "transfer-encoding", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.requests: dict[str, int] = {}
            self.bytes_received = 0
            self.bytes_sent = 0
            self.by_name: dict[str, list[int]] = {}  # name → [requests, bytes up, bytes down]

    def count(self, method: str, target: str, override: str | None, sent_up: int,
              came_back: int) -> None:
        if urlsplit(target).path.startswith("/_fake"):
            return
        label = route_label(method, target, override)
        with self._lock:
            self.requests[label] = self.requests.get(label, 0) + 1
            self.bytes_received += sent_up
            self.bytes_sent += came_back

    def attribute(self, target: str, body: bytes, data: bytes, location: str | None) -> None:
        """Charge a request to the Drive file it concerns, by name (when a ``namer``
        that maps file ids to names was given)."""
        import json
        import re

        if self._namer is None or urlsplit(target).path.startswith("/_fake"):
            return
        split = urlsplit(target)
        params = dict(parse_qsl(split.query))
        name = None
        if "upload_id" in params:
            name = self._sessions.get(params["upload_id"])
        m = re.match(r"^/(?:upload/)?drive/v3/files/([^/]+)$", split.path)
        if name is None and m and params.get("alt") == "media":
            name = self._namer(m.group(1))  # the body is the file's content, not metadata
        if name is None:
            try:
                reply = json.loads(data) if data[:1] == b"{" else {}
            except ValueError:
                reply = {}
            if isinstance(reply.get("name"), str):
                name = reply["name"]
            elif "files" in reply or "changes" in reply:
                name = "(listing)"
        if name is None and m:
            name = self._namer(m.group(1))
        if name is None and params.get("uploadType") == "resumable" and body[:1] == b"{":
            name = json.loads(body).get("name")
        if location and "upload_id=" in location and name:
            self._sessions[dict(parse_qsl(urlsplit(location).query))["upload_id"]] = name
        name = name or "(other)"
        with self._lock:
            row = self.by_name.setdefault(name, [0, 0, 0])
            row[0] += 1
            row[1] += len(body)
            row[2] += len(data)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": dict(self.requests),
                    "total_requests": sum(self.requests.values()),
                    "bytes_received": self.bytes_received, "bytes_sent": self.bytes_sent}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def minus(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Stats of ``total`` without ``part`` (both in the fake's Stats format)."""
    routes = {k: total["requests"].get(k, 0) - part["requests"].get(k, 0)
              for k in set(total["requests"]) | set(part["requests"])}
    routes = {k: v for k, v in routes.items() if v}
    return {"requests": routes, "total_requests": sum(routes.values()),
            "bytes_received": total["bytes_received"] - part["bytes_received"],
            "bytes_sent": total["bytes_sent"] - part["bytes_sent"]}


def print_routes(stats: dict[str, Any], seconds: float | None = None, indent: str = "    ") -> None:
    for route, n in sorted(stats["requests"].items(), key=lambda kv: (-kv[1], kv[0])):
        rate = f"  ({n / seconds:.2f}/s)" if seconds else ""
        print(f"{indent}{n:6d}  {route}{rate}")
    if not stats["requests"]:
        print(f"{indent}(no requests)")


def mb(n: float) -> str:
    return f"{n / (1 << 20):.2f} MiB"


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")
