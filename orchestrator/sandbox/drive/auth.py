"""The OAuth 2.0 side: a token endpoint and the access tokens it issued.

``POST /token`` accepts ``refresh_token`` (any non-empty refresh token),
``authorization_code`` (any code; a refresh token is issued too) and
``urn:ietf:params:oauth:grant-type:jwt-bearer`` (any assertion: service
accounts; the signed-in email is the assertion's ``sub`` or ``iss`` when it can
be read). Access tokens live ``ttl`` seconds; :meth:`TokenStore.expire_all`
ends them all at once so tests can exercise refresh-on-401.

A grant can end as Google ends them: :meth:`TokenStore.revoke` revokes one refresh
token (or every one so far, including any presented later that this server never
issued) together with the access tokens it gave; ``refresh_ttl`` makes refresh
tokens lapse that long after they were issued (an OAuth app in "Testing" status:
7 days). Refreshing with such a token answers 400
``{"error": "invalid_grant", "error_description": "Token has been expired or revoked."}``.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from typing import Any

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class OAuthError(Exception):
    """A token-endpoint error: ``{"error": code, "error_description": ...}``, status 400/401."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class TokenStore:
    """Access tokens issued by the fake, each bound to an email and an expiry."""

    def __init__(self, user_email: str, ttl: float = 3600.0) -> None:
        self.user_email = user_email
        self.ttl = ttl
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (email, expires at)
        self._refresh: dict[str, tuple[str, float]] = {}  # refresh token -> (email, issued)
        self._origin: dict[str, str] = {}  # access token -> the refresh token it came from
        self._revoked: set[str] = set()
        self._refuse_unknown = False  # after revoke(None): unknown refresh tokens too
        self.refresh_ttl: float | None = None  # refresh tokens lapse this long after issue
        self.grants = 0

    def issue(self, email: str | None = None, ttl: float | None = None) -> str:
        """A fresh access token for ``email`` (default: the configured user)."""
        token = "ya29.fake-" + secrets.token_urlsafe(32)
        life = self.ttl if ttl is None else ttl
        with self._lock:
            self._tokens[token] = (email or self.user_email, time.monotonic() + life)
        return token

    def email_for(self, token: str) -> str | None:
        """The email of a valid (issued, unexpired) token, else None."""
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def revoke(self, refresh_token: str | None = None) -> int:
        """Revoke ``refresh_token`` (None: every one so far, and any unknown one
        presented from now on) and the access tokens it gave. Returns how many
        refresh tokens were revoked. New sign-ins (``authorization_code``) work."""
        with self._lock:
            gone = {refresh_token} if refresh_token else set(self._refresh)
            if refresh_token is None:
                self._refuse_unknown = True
            self._revoked |= gone
            for token in [t for t, rt in self._origin.items() if rt in gone]:
                self._tokens.pop(token, None)
                del self._origin[token]
            return len(gone)

    def _usable(self, rt: str) -> str:
        """The email of refresh token ``rt``; OAuthError invalid_grant if it ended."""
        entry = self._refresh.get(rt)
        lapsed = (entry is not None and self.refresh_ttl is not None
                  and time.time() - entry[1] > self.refresh_ttl)
        if rt in self._revoked or lapsed or (entry is None and self._refuse_unknown):
            raise OAuthError("invalid_grant", "Token has been expired or revoked.")
        return entry[0] if entry else self.user_email

    def expire_all(self) -> None:
        """Make every access token issued so far invalid (refresh tokens stay good)."""
        with self._lock:
            self._tokens.clear()

    def grant(self, form: dict[str, str]) -> dict[str, Any]:
        """Answer a token request (``form`` is the decoded form body)."""
        grant_type = form.get("grant_type", "")
        email = self.user_email
        refresh: str | None = None
        refresh_origin: str | None = None
        if grant_type == "refresh_token":
            rt = form.get("refresh_token", "")
            if not rt:
                raise OAuthError("invalid_request", "Missing required parameter: refresh_token")
            with self._lock:
                email = self._usable(rt)
            refresh_origin = rt
        elif grant_type == "authorization_code":
            if not form.get("code"):
                raise OAuthError("invalid_request", "Missing required parameter: code")
            refresh = "1//fake-" + secrets.token_urlsafe(32)
            refresh_origin = refresh
            with self._lock:
                self._refresh[refresh] = (email, time.time())
        elif grant_type == JWT_BEARER:
            assertion = form.get("assertion", "")
            if not assertion:
                raise OAuthError("invalid_request", "Missing required parameter: assertion")
            email = _jwt_subject(assertion) or email
        else:
            raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")
        access = self.issue(email)
        with self._lock:
            self.grants += 1
            if refresh_origin:
                self._origin[access] = refresh_origin
        body: dict[str, Any] = {"access_token": access, "expires_in": int(self.ttl),
                                "token_type": "Bearer",
                                "scope": form.get("scope") or
                                "https://www.googleapis.com/auth/drive"}
        if refresh:
            body["refresh_token"] = refresh
        return body


def _jwt_subject(assertion: str) -> str | None:
    """``sub`` (else ``iss``) of an unverified JWT, or None if unreadable."""
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        value = claims.get("sub") or claims.get("iss")
        return str(value) if value else None
    except (IndexError, ValueError, AttributeError):
        return None
