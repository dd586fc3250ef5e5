"""HTTP front of the fake Drive: routing, the Drive v3 methods, uploads, auth,
faults; ``/token`` and ``/_fake`` are answered by :mod:`.control`. Stdlib only.

Each request: count it, (API requests only) decide a fault, read the body, check
the bearer token, then run the method under the state lock and build a
:class:`Reply`, written after the lock is released.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from . import fields as F
from . import listing
from .control import Reply, control, token, token_fault
from .errors import DriveError, auth_error
from .faults import KINDS
from .params import (
    check_list_params,
    fields_of,
    file_reply,
    flag,
    json_body,
    page_size,
    parents_of,
)
from .records import new_id
from .revisions import revisions_api
from .routes import ROUTES, stat_route
from .shared import changes_scope, check_access, list_scope
from .uploads import parse_content_range, parse_range, start_upload, upload_chunk

if TYPE_CHECKING:
    from .fake import FakeDrive

log = logging.getLogger(__name__)

class Handler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive like Google's front ends."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeDrive/1.0"
    timeout = 60  # idle keep-alive connections and stalled bodies end after this
    server: _Server

    # ------------------------------------------------------------ plumbing
    @property
    def fake(self) -> FakeDrive:
        return self.server.fake

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            return max(0, int(raw))
        except ValueError:
            return None

    def _read_body(self, count: bool = True) -> bytes:
        n = self._content_length()
        if n is not None:
            data = self.rfile.read(n) if n else b""
        elif "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                out += self.rfile.read(size)
                self.rfile.readline()
            data = bytes(out)
        else:
            data = b""
        if count:
            self.fake.counters.received(len(data))
        return data

    def _send(self, reply: Reply, count: bool = True) -> None:
        self.send_response(reply.status)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(reply.body)))
        # headers and body in one write (two small writes meet Nagle + delayed ACK)
        self._headers_buffer.append(b"\r\n" + reply.body)  # type: ignore[attr-defined]
        self.flush_headers()
        if count:
            self.fake.counters.sent(len(reply.body))

    def _reset_connection(self) -> None:
        """Close with a TCP RST (no FIN first), so the client sees a reset
        connection and httplib2 does not quietly retry as it does after a clean
        close."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.server.track(sock, False)
            os.close(sock.detach())
        except OSError:
            pass

    # ------------------------------------------------------------ dispatch
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        route, groups = "", {}
        for pattern, name in ROUTES:
            m = pattern.match(split.path)
            if m:
                route, groups = name, m.groupdict()
                break
        # googleapiclient sends over-long GETs as POST + X-HTTP-Method-Override: GET,
        # with the query string as a form body
        override = self.headers.get("X-HTTP-Method-Override")
        overridden = bool(override) and method == "POST"
        if overridden and override:
            method = override.upper()
        try:
            if route == "/_fake":
                self._send(control(self.fake, method, groups["what"], self._read_body(False)),
                           False)
                return
            self.fake.counters.count(method,
                                     stat_route(method, route or split.path, params))
            if route == "/token":
                broken = self.fake.faults.token_fault()
                if broken == "drop":
                    self._drop(route, params)
                    return
                self._send(token_fault(broken, self._read_body()) if broken else
                           token(self.fake, method, self._read_body()))
                return
            if not route:
                self._read_body()
                raise DriveError(404, "notFound", f"Not Found: {split.path}")
            fault = self.fake.faults.decide(method, self.path)
            if fault == "drop":
                self._drop(route, params)
                return
            body = self._read_body()
            lost, fault = fault == "lost", (None if fault == "lost" else fault)
            if fault is not None:
                status, domain, reason, message = KINDS[fault]  # type: ignore[misc]
                raise DriveError(status, reason, message, domain=domain)
            if overridden:
                params.update(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
                body = b""
            is_session = route.startswith("/upload/") and "upload_id" in params
            email = None if is_session else self._authenticate(params)
            with self.fake.state.lock:
                reply = self._api(method, route, groups, params, body, email)
                self._keep_forever(method, route, params, reply)
            if lost:  # done, but the answer never arrives
                self._reset_connection()
                return
        except DriveError as e:
            reply = Reply.json(e.code, e.body(), e.headers)
        except Exception as e:  # a bug in the fake: answer like Drive's 500, and log it
            log.exception("fake drive failed on %s %s", method, self.path)
            reply = Reply.json(500, DriveError(500, "internalError", f"Internal Error: {e!r}")
                               .body())
        self._send(reply)

    def _keep_forever(self, method: str, route: str, params: dict[str, str],
                      reply: Reply) -> None:
        """``keepRevisionForever=true`` on a create/update with media: pin the new head."""
        if reply.status == 200 and reply.body and flag(params, "keepRevisionForever", False) \
                and method in ("POST", "PATCH") and "upload_id" not in params:
            file_id = json.loads(reply.body).get("id")
            if file_id:
                self.fake.state.revisions.keep_head_forever(file_id)

    def _authenticate(self, params: dict[str, str]) -> str | None:
        header = self.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else \
            params.get("access_token", "")
        email = self.fake.tokens.email_for(token) if token else None
        if email is None and self.fake.require_auth:
            raise auth_error()
        return email or self.fake.user_email

    def _drop(self, route: str, params: dict[str, str]) -> None:
        n = self._content_length() or 0
        partial = self.rfile.read(n // 2) if n // 2 else b""
        self.fake.counters.received(len(partial))
        if partial and route.startswith("/upload/") and "upload_id" in params \
                and self.fake.faults.drop_keeps_partial:
            with self.fake.state.lock:
                s = self.fake.state.sessions.get(params["upload_id"])
                try:
                    start, _, total = parse_content_range(self.headers.get("Content-Range"))
                except DriveError:
                    start, total = None, None
                if s is not None and s.result_id is None and start == s.received:
                    room = (total if total is not None else 1 << 62) - s.received
                    s.data += partial[:max(0, room)]
        self._reset_connection()

    # ------------------------------------------------------------ Drive API
    def _api(self, method: str, route: str, groups: dict[str, str], params: dict[str, str],
             body: bytes, email: str | None) -> Reply:
        st = self.fake.state
        fid = groups.get("fileId", "")
        if route == "/drive/v3/files":
            if method == "GET":
                return self._files_list(params)
            if method == "POST":
                meta = json_body(body)
                check_access(st, parents_of(meta), params)
                rec = st.create(meta)
                return file_reply(st, rec.id, params)
        elif route == "/drive/v3/files/{fileId}":
            if method == "GET" and fid == "generateIds":
                n = int(params.get("count") or 10)
                return Reply.json(200, {"kind": "drive#generatedIds", "space": "drive",
                                        "ids": [new_id() for _ in range(min(max(n, 1), 1000))]})
            if method == "DELETE" and fid == "trash":
                st.empty_trash()
                return Reply(204)
            check_access(st, [fid, *params.get("addParents", "").split(",")], params)
            if method == "GET":
                if params.get("alt") == "media":
                    return self._media(fid)
                st.get(fid)
                return file_reply(st, fid, params)
            if method == "PATCH":
                rec = st.update(fid, json_body(body), None, params.get("addParents", ""),
                                params.get("removeParents", ""))
                return file_reply(st, rec.id, params)
            if method == "DELETE":
                st.delete(fid)
                return Reply(204)
        elif route.startswith("/drive/v3/files/{fileId}/revisions"):
            return revisions_api(st, method, fid, groups.get("revisionId"), fields_of(params))
        elif route == "/drive/v3/changes/startPageToken" and method == "GET":
            changes_scope(st, params)  # checks driveId
            tree = F.select(fields_of(params), F.START_PAGE_TOKEN,
                            {"kind": None, "startPageToken": None})
            return Reply.json(200, F.apply({"kind": "drive#startPageToken",
                                            "startPageToken": listing.start_page_token(st)}, tree))
        elif route == "/drive/v3/changes" and method == "GET":
            return self._changes_list(params)
        elif route == "/drive/v3/about" and method == "GET":
            selection = fields_of(params)
            if selection is None:
                raise DriveError(400, "required",
                                 "The 'fields' parameter is required for this method.",
                                 location="fields")
            F.validate(selection, F.ABOUT)
            return Reply.json(200, F.apply(st.about(email), selection))
        elif route.startswith("/upload/"):
            if method == "PUT" and "upload_id" in params:
                return upload_chunk(self.fake.state, params, self.headers, body)
            if (method, route) in (("POST", "/upload/drive/v3/files"),
                                   ("PATCH", "/upload/drive/v3/files/{fileId}")):
                host = self.headers.get("Host") or f"{self.fake.host}:{self.fake.port}"
                return start_upload(self.fake.state, fid or None, params, self.headers, body,
                                    host)
        raise DriveError(404, "notFound", f"Method not found: {method} {route}")

    def _media(self, file_id: str) -> Reply:
        st = self.fake.state
        rec = st.get(file_id)
        data = st.content(file_id)
        headers = {"Content-Type": rec.mime_type, "Accept-Ranges": "bytes",
                   "X-Goog-Hash": f"md5={rec.md5}"}
        rng = parse_range(self.headers.get("Range", ""), len(data)) if data else None
        if rng is None:
            return Reply(200, data, headers)
        start, end = rng
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return Reply(206, data[start:end + 1], headers)

    def _files_list(self, params: dict[str, str]) -> Reply:
        check_list_params(params)
        st = self.fake.state
        tree = F.select(fields_of(params), F.FILE_LIST, F.DEFAULT_FILE_LIST)
        spaces = {s.strip() for s in (params.get("spaces") or "drive").split(",")}
        if "drive" in spaces:
            recs, nxt = listing.list_files(
                st, params.get("q"), params.get("orderBy"), page_size(params),
                params.get("pageToken") or None, self.fake.faults.lag, list_scope(st, params))
        else:
            recs, nxt = [], None
        out: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False,
                               "files": [st.resource(r) for r in recs]}
        if nxt:
            out["nextPageToken"] = nxt
        return Reply.json(200, F.apply(out, tree))

    def _changes_list(self, params: dict[str, str]) -> Reply:
        check_list_params(params)
        st = self.fake.state
        token = params.get("pageToken")
        if not token:
            raise DriveError(400, "required", "Required parameter: pageToken",
                             location="pageToken")
        tree = F.select(fields_of(params), F.CHANGE_LIST, F.DEFAULT_CHANGE_LIST)
        flag(params, "restrictToMyDrive", False)
        changes, nxt, new_start = listing.list_changes(
            st, token, page_size(params), flag(params, "includeRemoved", True),
            self.fake.faults.lag, changes_scope(st, params))
        out: dict[str, Any] = {"kind": "drive#changeList",
                               "changes": [st.change_resource(c) for c in changes]}
        if nxt:
            out["nextPageToken"] = nxt
        if new_start:
            out["newStartPageToken"] = new_start
        return Reply.json(200, F.apply(out, tree))


class _Server(ThreadingHTTPServer):
    """The threading server, knowing its :class:`FakeDrive` and open connections."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], fake: FakeDrive) -> None:
        self.fake = fake
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log (instead of printing) errors that escaped a handler; a client that
        went away is routine."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            log.debug("connection from %s ended: %r", client_address, exc)
        else:
            log.exception("fake drive: error serving %s", client_address)

    def track(self, sock: socket.socket, open_: bool) -> None:
        with self._conns_lock:
            (self._conns.add if open_ else self._conns.discard)(sock)

    def close_connections(self) -> None:
        """Shut every open connection (so kept-alive clients see the server go)."""
        with self._conns_lock:
            conns = list(self._conns)
            self._conns.clear()
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
