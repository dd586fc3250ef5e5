"""`FakeDrive`: the in-process handle on a running fake Drive v3 server.

    with FakeDrive(user_email="me@example.com", token_ttl=3600) as fake:
        service = build_service(credentials=fake.credentials(), url=fake.url)
        fake.faults.fail_next(1, "503")           # the next API request fails
        fake.faults.configure(rate=0.05, seed=7)   # 5 % of requests fail, reproducibly
        fake.faults.lag = 2.0                      # listings show writes 2 s late
        fake.stats["requests"]["GET /drive/v3/files"]
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Self

from .auth import TokenStore
from .faults import Faults
from .server import _Server
from .state import DriveState


class Stats:
    """Request counts per ``"METHOD route"`` and body bytes in and out (thread-safe).

    Routes are path templates (``/drive/v3/files/{fileId}``) qualified for
    downloads (``?alt=media``) and uploads (``?uploadType=resumable``, and
    ``?upload_id`` for session PUTs). ``/_fake`` requests are not counted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        with self._lock:
            self._requests: dict[str, int] = {}
            self._in = 0
            self._out = 0

    def count(self, method: str, route: str) -> None:
        key = route if route.startswith(method + " ") else f"{method} {route}"
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1

    def received(self, n: int) -> None:
        with self._lock:
            self._in += n

    def sent(self, n: int) -> None:
        with self._lock:
            self._out += n

    def snapshot(self) -> dict[str, Any]:
        """``{"requests": {...}, "total_requests", "bytes_received", "bytes_sent"}``."""
        with self._lock:
            return {"requests": dict(self._requests),
                    "total_requests": sum(self._requests.values()),
                    "bytes_received": self._in, "bytes_sent": self._out}


class FakeDrive:
    """A fake Google Drive v3 REST server on ``host:port`` (0: any free port),
    served by a background thread.

    Args:
        host, port: where to listen (``url`` is ``http://host:port/``).
        user_email: the signed-in user (about.get, owners); tokens can name others.
        token_ttl: lifetime in seconds of the access tokens ``/token`` issues.
        require_auth: when False, API requests need no bearer token.
        seed: seed of the random fault sequence.
        list_trashed_by_default: as Drive, files.list includes trashed files
            unless ``q`` says ``trashed = false``; False hides them unless ``q``
            mentions ``trashed``.
        coalesce_changes: as Drive, changes.list reports each file once, at its
            latest change; False reports every change.
        start: start serving now (else call :meth:`start`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 user_email: str = "tester@example.com", token_ttl: float = 3600.0,
                 require_auth: bool = True, seed: int = 0,
                 list_trashed_by_default: bool = True, coalesce_changes: bool = True,
                 start: bool = True) -> None:
        self.user_email = user_email
        self.require_auth = require_auth
        self.state = DriveState(user_email, list_trashed_by_default, coalesce_changes)
        self.tokens = TokenStore(user_email, token_ttl)
        self.faults = Faults(seed)
        self.counters = Stats()
        self._server = _Server((host, port), self)
        address = self._server.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        """The root URL to give ``build_service(url=...)``: ``http://127.0.0.1:PORT/``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def token_uri(self) -> str:
        """The OAuth 2.0 token endpoint: ``<url>token``."""
        return self.url + "token"

    def start(self) -> Self:
        """Serve in a daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name=f"fakedrive:{self.port}", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread (the standalone ``python -m orchestrator.sandbox.drive``)."""
        self._server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving, close the listening socket and every open connection."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ auth
    @property
    def token_ttl(self) -> float:
        """Lifetime (s) of tokens issued from now on."""
        return self.tokens.ttl

    @token_ttl.setter
    def token_ttl(self, value: float) -> None:
        self.tokens.ttl = float(value)

    def issue_token(self, email: str | None = None, ttl: float | None = None) -> str:
        """A valid access token (for ``email``, default the configured user)."""
        return self.tokens.issue(email, ttl)

    def expire_tokens(self) -> None:
        """Invalidate every access token issued so far (clients must refresh)."""
        self.tokens.expire_all()

    def revoke_tokens(self, refresh_token: str | None = None) -> int:
        """Revoke a refresh token (default: all) and its access tokens: refreshing
        with it answers ``invalid_grant``, as Google does for an expired or revoked
        grant. Returns how many were revoked."""
        return self.tokens.revoke(refresh_token)

    def credentials(self, access_token: str | None = None,
                    refresh_token: str = "1//fake-refresh-token") -> Any:
        """oauth2client ``OAuth2Credentials`` for this server: a valid access token
        (unless one is given) and a refresh token, ``token_uri`` = :attr:`token_uri`,
        so a 401 makes the client refresh here. Imports oauth2client lazily."""
        from oauth2client.client import OAuth2Credentials

        return OAuth2Credentials(
            access_token if access_token is not None else self.issue_token(),
            "fake-client-id.apps.googleusercontent.com", "fake-client-secret", refresh_token,
            None, self.token_uri, "orch-tests")

    def write_credentials(self, path: Path) -> None:
        """Save :meth:`credentials` where orch reads them, as `orch auth` leaves them:
        oauth2client's file format, mode 0600."""
        import os

        from oauth2client.file import Storage

        path.parent.mkdir(parents=True, exist_ok=True)
        Storage(str(path)).put(self.credentials())
        os.chmod(path, 0o600)

    # ------------------------------------------------------------ inspection
    @property
    def stats(self) -> dict[str, Any]:
        """Requests per ``"METHOD route"``, totals and bytes (see :class:`Stats`),
        plus ``faults_injected`` per kind."""
        out = self.counters.snapshot()
        out["faults_injected"] = self.faults.injected_counts()
        return out

    def requests(self, method: str, route: str) -> int:
        """How many ``method route`` requests arrived (``route`` as in :attr:`stats`)."""
        return int(self.counters.snapshot()["requests"].get(f"{method} {route}", 0))

    def reset_stats(self) -> None:
        """Zero the request and byte counters (and the injected-fault counts)."""
        self.counters.reset()
        self.faults.injected_counts(reset=True)

    def files(self) -> list[dict[str, Any]]:
        """Every file's full resource (creation order), deleted ones excluded."""
        with self.state.lock:
            return self.state.dump()

    def file(self, file_id: str) -> dict[str, Any]:
        """One file's full resource (KeyError if unknown)."""
        with self.state.lock:
            rec = self.state.files.get(self.state.resolve(file_id))
            if rec is None:
                raise KeyError(file_id)
            return self.state.resource(rec)

    def content(self, file_id: str) -> bytes:
        """One file's bytes (KeyError if unknown)."""
        with self.state.lock:
            if file_id not in self.state.files:
                raise KeyError(file_id)
            return self.state.contents.get(file_id, b"")

    def find(self, name: str | None = None, parent: str | None = None,
             trashed: bool | None = None) -> list[dict[str, Any]]:
        """Resources filtered by exact name, parent id and trashed state (current
        state, no lag)."""
        with self.state.lock:
            pid = self.state.resolve(parent) if parent else None
            return [self.state.resource(f) for f in sorted(self.state.files.values(),
                                                           key=lambda f: f.seq)
                    if (name is None or f.name == name)
                    and (pid is None or pid in f.parents)
                    and (trashed is None or f.trashed == trashed)]

    def add_shared_drive(self, name: str = "Team") -> str:
        """Make a Shared Drive the user is a member of; its id (also its root
        folder's id). Its files are seen only by requests with supportsAllDrives."""
        return self.state.add_drive(name).id

    def paths(self) -> dict[str, str]:
        """``{"folder/sub/name": id}`` for every file (first parent; later
        duplicates of a path win)."""
        with self.state.lock:
            return {self.state.path_of(f): f.id
                    for f in sorted(self.state.files.values(), key=lambda f: f.seq)}

    def reset(self) -> None:
        """Delete all files, changes and sessions; clear faults and stats.
        Tokens stay valid."""
        self.state.reset()
        self.faults.clear()
        self.reset_stats()
