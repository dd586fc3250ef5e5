"""The fake Drive's routes: which path is which Drive v3 method, and how
:attr:`FakeDrive.stats` names a request (``route_label`` lets benchmarks name the
requests a client made the same way). Pure functions."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

#: (path pattern, route name); a route names one Drive v3 method family.
ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/drive/v3/files$"), "/drive/v3/files"),
    (re.compile(r"^/drive/v3/files/(?P<fileId>[^/]+)$"), "/drive/v3/files/{fileId}"),
    (re.compile(r"^/drive/v3/files/(?P<fileId>[^/]+)/revisions$"),
     "/drive/v3/files/{fileId}/revisions"),
    (re.compile(r"^/drive/v3/files/(?P<fileId>[^/]+)/revisions/(?P<revisionId>[^/]+)$"),
     "/drive/v3/files/{fileId}/revisions/{revisionId}"),
    (re.compile(r"^/drive/v3/changes$"), "/drive/v3/changes"),
    (re.compile(r"^/drive/v3/changes/startPageToken$"), "/drive/v3/changes/startPageToken"),
    (re.compile(r"^/drive/v3/about$"), "/drive/v3/about"),
    (re.compile(r"^/(?:resumable/)?upload/drive/v3/files$"), "/upload/drive/v3/files"),
    (re.compile(r"^/(?:resumable/)?upload/drive/v3/files/(?P<fileId>[^/]+)$"),
     "/upload/drive/v3/files/{fileId}"),
    (re.compile(r"^/token$"), "/token"),
    (re.compile(r"^/_fake/(?P<what>[a-z/_]+)$"), "/_fake"),
]


def stat_route(method: str, route: str, params: dict[str, str]) -> str:
    """How :attr:`FakeDrive.stats` names a request: ``"METHOD route"``, with the
    upload type or ``alt=media`` where they tell requests of one route apart."""
    if route.startswith("/upload/"):
        if "upload_id" in params:
            return f"{method} {route}?upload_id"
        return f"{method} {route}?uploadType={params.get('uploadType', '')}"
    if route == "/drive/v3/files/{fileId}" and params.get("alt") == "media":
        return f"{method} {route}?alt=media"
    return f"{method} {route}"


def route_label(method: str, target: str, override: str | None = None) -> str:
    """The stats label of a request for ``target`` (path and query) as the fake
    would count it; ``override`` is an ``X-HTTP-Method-Override`` header."""
    split = urlsplit(target)
    params = dict(parse_qsl(split.query, keep_blank_values=True))
    route = next((name for pattern, name in ROUTES if pattern.match(split.path)), split.path)
    if override and method == "POST":
        method = override.upper()
    return stat_route(method, route, params)
