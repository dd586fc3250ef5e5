"""Drive's error responses: one exception carrying the JSON body Drive would send."""

from __future__ import annotations

from typing import Any

#: Status codes and their canonical ``status`` strings (as Google APIs send them).
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 416: "OUT_OF_RANGE", 429: "RESOURCE_EXHAUSTED",
           500: "INTERNAL", 503: "UNAVAILABLE"}


class DriveError(Exception):
    """An API error, rendered as Drive's ``{"error": {...}}`` JSON document.

    ``reason`` and ``domain`` land in ``errors[0]`` (what googleapiclient's
    ``HttpError.error_details`` and ``reason`` expose); ``location`` names the
    offending parameter or header when there is one.
    """

    def __init__(self, code: int, reason: str, message: str, domain: str = "global",
                 location: str | None = None, location_type: str = "parameter",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON document Drive sends for this error."""
        detail: dict[str, Any] = {"message": self.message, "domain": self.domain,
                                  "reason": self.reason}
        if self.location:
            detail["location"] = self.location
            detail["locationType"] = self.location_type
        err: dict[str, Any] = {"code": self.code, "message": self.message, "errors": [detail]}
        if self.code in _STATUS:
            err["status"] = _STATUS[self.code]
        return {"error": err}


def not_found(file_id: str) -> DriveError:
    """404 for an unknown (or deleted) file id, worded as Drive words it."""
    return DriveError(404, "notFound", f"File not found: {file_id}.", location="fileId")


def invalid(message: str, location: str | None = None, reason: str = "invalid") -> DriveError:
    """400 for a malformed parameter or body."""
    return DriveError(400, reason, message, location=location)


def bad_request(message: str) -> DriveError:
    """400 ``badRequest`` (used by the upload protocol)."""
    return DriveError(400, "badRequest", message)


def auth_error() -> DriveError:
    """401 for a missing, unknown or expired access token."""
    return DriveError(
        401, "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
        location="Authorization", location_type="header",
        headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", '
                                     'error="invalid_token"'})
