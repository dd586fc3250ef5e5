"""Replies, the OAuth token endpoint and the ``/_fake`` control API.

Control endpoints (JSON in and out; never faulted, never counted in stats)::

    GET  /_fake/faults          the fault settings       POST /_fake/faults  change them
                                (also outages: {"outage"|"token_outage": {"seconds", "kind"}})
    GET  /_fake/stats           request counts, bytes    POST /_fake/stats/reset
    POST /_fake/tokens          {"email"?, "ttl"?} -> {"access_token"}
    POST /_fake/tokens/expire   invalidate all access tokens
    POST /_fake/tokens/revoke   {"refresh_token"?}: revoke it (default: all) -> invalid_grant
    GET  /_fake/files           every file's full resource
    POST /_fake/reset           forget all files, changes, sessions, faults, stats
    GET|POST /_fake/config      {"require_auth"?, "token_ttl"?, "refresh_ttl"?}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .auth import OAuthError

if TYPE_CHECKING:
    from .fake import FakeDrive


@dataclass
class Reply:
    """A response to write: status, headers and body bytes."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
        h = {"Content-Type": "application/json; charset=UTF-8", **(headers or {})}
        return cls(status, json.dumps(obj).encode(), h)


def token(fake: FakeDrive, method: str, body: bytes) -> Reply:
    """``POST /token``: the OAuth 2.0 token endpoint (form-encoded request)."""
    if method != "POST":
        return Reply.json(405, {"error": "invalid_request",
                                "error_description": "Use POST"})
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    try:
        return Reply.json(200, fake.tokens.grant(form),
                          {"Cache-Control": "no-store", "Pragma": "no-cache"})
    except OAuthError as e:
        return Reply.json(e.status, e.body())


def token_fault(kind: str, _body: bytes) -> Reply:
    """What Google's token endpoint answers when down (``503``/``500``), or when the
    refresh token expired or was revoked (``invalid_grant``)."""
    if kind == "invalid_grant":
        return Reply.json(400, {"error": "invalid_grant",
                                "error_description": "Token has been expired or revoked."})
    return Reply.json(int(kind), {"error": "internal_failure",
                                  "error_description": "Backend Error"})


def control(fake: FakeDrive, method: str, what: str, body: bytes) -> Reply:
    """``/_fake/<what>``: the control API of a (possibly separately started) fake."""
    try:
        doc = json.loads(body.decode() or "{}") if body.strip() else {}
    except ValueError:
        return Reply.json(400, {"error": "body is not JSON"})
    try:
        if what == "faults" and method == "POST":
            fake.faults.apply_json(doc)
            return Reply.json(200, fake.faults.to_dict())
        if what == "faults" and method == "GET":
            return Reply.json(200, fake.faults.to_dict())
        if what == "stats" and method == "GET":
            return Reply.json(200, fake.stats)
        if what in ("stats/reset", "stats") and method in ("POST", "DELETE"):
            fake.reset_stats()
            return Reply.json(200, fake.stats)
        if what == "tokens" and method == "POST":
            ttl = doc.get("ttl")
            return Reply.json(200, {"access_token": fake.issue_token(
                doc.get("email"), float(ttl) if ttl is not None else None)})
        if what == "tokens/expire" and method == "POST":
            fake.expire_tokens()
            return Reply.json(200, {"expired": True})
        if what == "tokens/revoke" and method == "POST":
            return Reply.json(200, {"revoked": fake.revoke_tokens(doc.get("refresh_token"))})
        if what == "drives" and method == "POST":
            return Reply.json(200, {"id": fake.add_shared_drive(str(doc.get("name") or
                                                                    "Team"))})
        if what == "files" and method == "GET":
            return Reply.json(200, {"files": fake.files()})
        if what == "reset" and method == "POST":
            fake.reset()
            return Reply.json(200, {"reset": True})
        if what == "config" and method in ("GET", "POST"):
            if "require_auth" in doc:
                fake.require_auth = bool(doc["require_auth"])
            if "token_ttl" in doc:
                fake.token_ttl = float(doc["token_ttl"])
            if "refresh_ttl" in doc:
                ttl = doc["refresh_ttl"]
                fake.tokens.refresh_ttl = None if ttl is None else float(ttl)
            return Reply.json(200, {"require_auth": fake.require_auth,
                                    "token_ttl": fake.token_ttl,
                                    "refresh_ttl": fake.tokens.refresh_ttl,
                                    "user_email": fake.user_email, "url": fake.url})
    except (ValueError, TypeError) as e:
        return Reply.json(400, {"error": str(e)})
    return Reply.json(404, {"error": f"no control endpoint {method} /_fake/{what}"})
