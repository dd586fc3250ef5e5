"""Building the Drive v3 client (google-api-python-client) for any endpoint.

The client is built from the discovery document bundled with the library (no
network fetch), with ``rootUrl`` rewritten when ``ORCH_DRIVE_ROOT_URL`` (or
``root_url``) names another endpoint, such as the local Drive v3 server the tests
use. Rewriting the document is needed: ``client_options`` alone leaves upload
URLs on https://www.googleapis.com.

The HTTP object comes from ``googleapiclient.http.build_http()``: a bare
``httplib2.Http()`` treats resumable uploads' ``308 Resume Incomplete`` (sent
without a ``Location``) as a redirect and fails.

:class:`DriveClient` sends requests: rate limits (403 ``rateLimitExceeded``/
``userRateLimitExceeded``), 429, 5xx and dropped connections are retried with
truncated exponential backoff and jitter, a bounded number of times; anything
else raises HubError naming the call and the key. Large files go up in resumable
chunks (multiples of 256 KiB); after a broken chunk the session is asked how much
it holds and the upload continues from there (``next_chunk(num_retries>0)``
would re-send an empty body and stall). Thread-safe: each thread gets its own
HTTP client (httplib2 is not thread-safe).

Imports of googleapiclient happen inside these functions: the CLI never pays.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...errors import HubError, HubFullError, SignInExpiredError, TransientHubError
from .auth import SIGN_IN_AGAIN
from .index import FILE_FIELDS, FOLDER, DriveFile

log = logging.getLogger(__name__)

RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
CHUNK = 256 * 1024

ROOT_URL_ENV = "ORCH_DRIVE_ROOT_URL"
DEFAULT_ROOT_URL = "https://www.googleapis.com/"


def root_url(given: str | None = None) -> str:
    """The Drive endpoint in force: ``given``, else $ORCH_DRIVE_ROOT_URL, else Google."""
    url = given or os.environ.get(ROOT_URL_ENV) or DEFAULT_ROOT_URL
    return url.rstrip("/") + "/"


def _require() -> Any:
    try:
        import googleapiclient
    except ImportError as exc:
        from ...errors import UsageError

        raise UsageError("the Drive hub needs orch's drive extra: pip install 'orch[drive]'") \
            from exc
    return googleapiclient


def discovery_document(url: str | None = None) -> dict[str, Any]:
    """The bundled Drive v3 discovery document, pointed at ``url``."""
    googleapiclient = _require()
    path = Path(googleapiclient.__file__).parent / "discovery_cache/documents/drive.v3.json"
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    root = root_url(url)
    doc["rootUrl"] = root
    doc["mtlsRootUrl"] = root
    doc["baseUrl"] = root + doc["servicePath"]
    return doc


def quiet_client_logs() -> None:
    """Silence the Google client's log noise: ``googleapiclient._helpers`` (and
    oauth2client's) "X() takes at most N positional arguments" warnings, logged
    for every MediaFileUpload that names its mimetype positionally, and
    ``googleapiclient.discovery_cache``'s "file_cache is only supported with
    oauth2client<4.0.0", and oauth2client's notes on each token refresh (a refused
    one reaches orch's log as one line: :data:`.auth.SIGN_IN_AGAIN`). Idempotent."""
    for name in ("googleapiclient._helpers", "oauth2client._helpers",
                 "googleapiclient.discovery_cache"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("oauth2client.transport", "oauth2client.client"):
        logging.getLogger(name).setLevel(logging.WARNING)


def build_service(credentials: Any = None, url: str | None = None, http: Any = None,
                  timeout: float = 60.0) -> Any:
    """A Drive v3 ``Resource``. ``credentials`` are oauth2client credentials (what
    pydrive2 produces) or google-auth credentials; ``http`` overrides both."""
    from googleapiclient.discovery import build_from_document
    from googleapiclient.http import build_http

    if http is None:
        http = build_http()
        http.timeout = timeout
        if credentials is not None:
            if hasattr(credentials, "authorize"):  # oauth2client
                http = credentials.authorize(http)
            else:  # google-auth
                import google_auth_httplib2

                http = google_auth_httplib2.AuthorizedHttp(credentials, http=http)
    quiet_client_logs()
    return build_from_document(discovery_document(url), http=http)


class DriveClient:
    """Drive v3 requests with bounded retries, for one hub (and its shared drive)."""

    def __init__(self, factory: Callable[[], Any], name: str, shared_drive: str | None = None,
                 retries: int = 8, backoff: float = 0.5, max_backoff: float = 30.0,
                 chunk_size: int = 32 * CHUNK * 4) -> None:
        """``name`` (the hub's url) is named in errors about no key in particular."""
        self._factory = factory
        self.name = name
        self._local = threading.local()
        self.shared_drive = shared_drive
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.chunk_size = max(CHUNK, chunk_size // CHUNK * CHUNK)
        self.requests = 0

    def svc(self) -> Any:
        """This thread's Drive service (built on first use)."""
        svc = getattr(self._local, "svc", None)
        if svc is None:
            svc = self._local.svc = self._factory()
        return svc

    def _reconnect(self) -> None:
        self._local.svc = None  # a broken connection: a fresh client next time

    def drive_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"supportsAllDrives": True}
        if self.shared_drive:
            args["driveId"] = self.shared_drive
        return args

    def changes_args(self) -> dict[str, Any]:
        """changes.list's: it takes ``driveId`` but no ``corpora``."""
        args: dict[str, Any] = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}
        if self.shared_drive:
            args["driveId"] = self.shared_drive
        return args

    def list_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}
        if self.shared_drive:
            args.update(corpora="drive", driveId=self.shared_drive)
        return args

    @staticmethod
    def transient(exc: BaseException) -> bool:
        from googleapiclient.errors import HttpError

        refresh = token_refresh_transient(exc)
        if refresh is not None:
            return refresh
        if isinstance(exc, HttpError):
            status = int(exc.resp.status)
            if status in (429, 500, 502, 503, 504):
                return True
            if status == 403:
                reasons = {d.get("reason") for d in (exc.error_details or [])
                           if isinstance(d, dict)}
                return bool(reasons & RATE_REASONS) or "rateLimitExceeded" in str(exc)
            return False
        import httplib2

        if isinstance(exc, (OSError, httplib2.HttpLib2Error, ConnectionError, TimeoutError)):
            return True
        try:  # google-auth credentials (Colab's) wrap a dropped or unresolved connection
            from google.auth.exceptions import TransportError
        except ImportError:  # pragma: no cover - google-auth comes with the client
            return False
        return isinstance(exc, TransportError)

    def sleep(self, attempt: int) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        time.sleep(random.uniform(delay / 2, delay))

    def call(self, what: str, key: str, make: Callable[[Any], Any],
             missing_ok: bool = False) -> Any:
        """Build a request with ``make(service)`` and execute it, retrying
        transient failures. Returns None for a 404 when ``missing_ok``."""
        from googleapiclient.errors import HttpError

        for attempt in range(self.retries + 1):
            try:
                self.requests += 1
                return make(self.svc()).execute(num_retries=0)
            except Exception as exc:
                if isinstance(exc, HttpError) and int(exc.resp.status) == 404 and missing_ok:
                    return None
                if self.transient(exc) and attempt < self.retries:
                    log.info("Drive %s %s: %s; retrying", what, key or "", brief(exc))
                    if not isinstance(exc, HttpError):
                        self._reconnect()
                    self.sleep(attempt)
                    continue
                raise self.failure(f"Drive {what} failed for {key or self.name}", exc, key) \
                    from exc
        raise AssertionError("unreachable")

    def failure(self, what: str, exc: BaseException, key: str = "") -> HubError:
        """The error to raise for ``exc`` (about ``key``) once retries are spent (or not
        worth it): HubFullError for a full Drive (one line, never retried),
        SignInExpiredError for a lapsed grant, TransientHubError for a failure worth
        trying again later (the worker rides out outages with those), else HubError."""
        if quota_exceeded(exc):
            return HubFullError(f"Drive storage quota exceeded: {key or 'a file'} was not "
                                "uploaded (free space in that Google account's Drive)")
        if sign_in_lapsed(exc):
            return SignInExpiredError(SIGN_IN_AGAIN)
        if self.transient(exc):
            return TransientHubError(f"{what}: {brief(exc)}")
        return HubError(f"{what}: {brief(exc)}")

    # ---- requests ---------------------------------------------------------------

    def query(self, q: str, key: str) -> list[DriveFile]:
        """Every file matching the Drive query ``q`` (all pages)."""
        files: list[DriveFile] = []
        token = None
        while True:
            resp = self.call("files.list", key, lambda s, t=token: s.files().list(  # type: ignore[misc]
                q=q, fields=f"nextPageToken, files({FILE_FIELDS})", pageSize=1000,
                pageToken=t, **self.list_args()))
            files += [DriveFile.of(f) for f in resp.get("files", [])]
            token = resp.get("nextPageToken")
            if not token:
                return files

    def create_folder(self, name: str, parent: str) -> DriveFile:
        meta = self.call("files.create", name, lambda s: s.files().create(
            body={"name": name, "mimeType": FOLDER, "parents": [parent]},
            fields=FILE_FIELDS, supportsAllDrives=True))
        return DriveFile.of(meta)

    def metadata(self, key: str, file_id: str) -> dict[str, Any] | None:
        """A file's metadata (None if it is gone)."""
        return self.call("files.get", key, lambda s: s.files().get(  # type: ignore[no-any-return]
            fileId=file_id, fields=FILE_FIELDS, supportsAllDrives=True), missing_ok=True)

    def media(self, key: str, file_id: str) -> bytes | None:
        """A small file's bytes in one request (None if it is gone)."""
        return self.call("files.get_media", key, lambda s: s.files().get_media(  # type: ignore[no-any-return]
            fileId=file_id, supportsAllDrives=True), missing_ok=True)

    def delete(self, key: str, file_id: str) -> None:
        self.call("files.delete", key, lambda s: s.files().delete(
            fileId=file_id, supportsAllDrives=True), missing_ok=True)

    def download(self, key: str, file_id: str, tmp: Path) -> str:
        """Stream a file to ``tmp`` in chunks, resuming after transient errors.
        Returns the md5 of what arrived."""
        from googleapiclient.http import MediaIoBaseDownload

        with open(tmp, "wb") as out:
            request = self.svc().files().get_media(fileId=file_id, supportsAllDrives=True)
            down = MediaIoBaseDownload(out, request, chunksize=self.chunk_size)
            done, failures = False, 0
            while not done:
                try:
                    self.requests += 1
                    _, done = down.next_chunk(num_retries=0)
                except Exception as exc:
                    if not self.transient(exc) or failures >= self.retries:
                        raise self.failure(f"Drive download failed for {key}", exc, key) from exc
                    self.sleep(failures)
                    failures += 1
        h = hashlib.md5()
        with open(tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def upload(self, key: str, make: Callable[[Any, Any], Any],
               media: Callable[[bool], Any], resumable: bool) -> dict[str, Any]:
        """Create or update a file: ``make(service, media)`` builds the request."""
        if not resumable:
            return self.call("upload", key, lambda s: make(s, media(False)))  # type: ignore[no-any-return]
        for attempt in range(self.retries + 1):
            try:
                return self._resumable(key, make(self.svc(), media(True)))
            except _Restart as exc:
                if attempt >= self.retries:
                    raise TransientHubError(f"Drive upload failed for {key}: {exc}") from exc
                self.sleep(attempt)
        raise AssertionError("unreachable")

    def _resumable(self, key: str, request: Any) -> dict[str, Any]:
        """Send ``request`` chunk by chunk; after a transient error, ask the session
        how much it has and continue from there."""
        failures = 0
        while True:
            try:
                self.requests += 1
                _, response = request.next_chunk(num_retries=0)
            except Exception as exc:
                if not self.transient(exc):
                    raise self.failure(f"Drive upload failed for {key}", exc, key) from exc
                if failures >= self.retries:
                    raise self.failure(f"Drive upload of {key} kept failing", exc, key) from exc
                failures += 1
                self.sleep(failures - 1)
                if request.resumable_uri is None:  # the session never started
                    raise _Restart(brief(exc)) from exc
                response = self._resume(key, request)
            if response is not None:
                return response  # type: ignore[no-any-return]

    def _resume(self, key: str, request: Any) -> dict[str, Any] | None:
        """Ask an upload session what it holds (``Content-Range: bytes */TOTAL``)."""
        total = request.resumable.size()
        self.requests += 1
        try:
            resp, body = request.http.request(
                request.resumable_uri, "PUT", body=b"",
                headers={"Content-Range": f"bytes */{total}", "Content-Length": "0"})
        except Exception as exc:
            if self.transient(exc):
                self._reconnect()
                return None  # next_chunk will try again (and come back here on failure)
            raise
        status = int(resp.status)
        if status in (200, 201):
            return json.loads(body)  # type: ignore[no-any-return]
        if status == 308:
            got = resp.get("range")
            request.resumable_progress = int(got.rsplit("-", 1)[1]) + 1 if got else 0
            request._in_error_state = False  # we asked: do not let the client ask again
            return None
        if status == 404:
            raise _Restart("upload session expired")
        if status in (429, 500, 502, 503, 504):
            return None
        raise HubError(f"Drive upload of {key}: session answered HTTP {status}")


class _Restart(TransientHubError):
    """An upload session that never started, or expired: start a new one."""


def _refresh_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed OAuth token refresh (oauth2client or google-auth)."""
    try:
        from oauth2client.client import AccessTokenRefreshError
        if isinstance(exc, AccessTokenRefreshError):
            return True
    except ImportError:  # pragma: no cover - oauth2client comes with pydrive2
        pass
    try:
        from google.auth.exceptions import RefreshError
        return isinstance(exc, RefreshError)
    except ImportError:  # pragma: no cover
        return False


def sign_in_lapsed(exc: BaseException) -> bool:
    """A token refresh refused with ``invalid_grant``: the refresh token expired (7
    days for a "Testing" OAuth client) or was revoked. Only signing in again helps."""
    return _refresh_error(exc) and "invalid_grant" in str(exc)


def token_refresh_transient(exc: BaseException) -> bool | None:
    """None if ``exc`` is no token-refresh failure; else whether it is worth another
    try: the token endpoint answered 429 or 5xx, or could not be reached. (Network
    failures while refreshing surface as the transport's own errors, which
    :meth:`DriveClient.transient` already treats as transient.)"""
    if not _refresh_error(exc):
        return None
    if sign_in_lapsed(exc):
        return False
    status = getattr(exc, "status", None)  # oauth2client's HttpAccessTokenRefreshError
    if isinstance(status, int):
        return status == 429 or status >= 500
    retryable = getattr(exc, "retryable", None)  # google-auth
    if isinstance(retryable, bool):
        return retryable
    return any(f"{code}" in str(exc) for code in (429, 500, 502, 503, 504))


QUOTA_REASON = "storageQuotaExceeded"


def quota_exceeded(exc: BaseException) -> bool:
    """Drive's storage quota is exceeded (403 ``storageQuotaExceeded``): no retry helps."""
    from googleapiclient.errors import HttpError

    return isinstance(exc, HttpError) and int(exc.resp.status) == 403 and QUOTA_REASON in {
        d.get("reason") for d in (exc.error_details or []) if isinstance(d, dict)}


def brief(exc: BaseException) -> str:
    """One line about a Drive failure."""
    from googleapiclient.errors import HttpError

    if isinstance(exc, HttpError):
        reasons = ",".join(str(d.get("reason")) for d in (exc.error_details or [])
                           if isinstance(d, dict))
        return f"HTTP {exc.resp.status} {reasons} {exc._get_reason()}".strip()
    return f"{type(exc).__name__}: {exc}"
