"""Building the Drive v3 client (google-api-python-client) for any endpoint.

The client is built from the discovery document bundled with the library (no
network fetch), with ``rootUrl`` rewritten when ``ORCH_DRIVE_ROOT_URL`` (or
``root_url``) names another endpoint, such as the local Drive v3 server the tests
use. Rewriting the document is needed: ``client_options`` alone leaves upload
URLs on https://www.googleapis.com.

The HTTP object comes from ``googleapiclient.http.build_http()``: a bare
``httplib2.Http()`` treats resumable uploads' ``308 Resume Incomplete`` (sent
without a ``Location``) as a redirect and fails.

Imports of googleapiclient happen inside these functions: the CLI never pays.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
        from ..errors import UsageError

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
    return build_from_document(discovery_document(url), http=http)
