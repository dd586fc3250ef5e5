"""Signing in to Google Drive, with pydrive2.

Scope: the ``drive_scope`` setting, ``drive`` (default) or ``drive.file``. Under
``drive.file`` a file is visible only to the OAuth client that created it (or
that the user opened with it), and the worker signed in inside Colab is another
client: the laptop and the notebook would not see each other's files. So
``drive.file`` suits a hub used only with this OAuth client's credentials (the
daemon, and `orch worker --hub drive:…` given the same credentials file); Colab
workers need ``drive``. orch only ever touches its hub folder.

Lapsing: Google gives a desktop OAuth client in "Testing" publishing status
refresh tokens that expire 7 days after sign-in. orch cannot ask Google for the
status, so `orch auth` records when it signed in (``<credentials>.signin.json``,
written only by :func:`sign_in`, 0600) and `orch auth status` says when the
sign-in lapses if the app is in Testing. An expired or revoked grant surfaces as
:class:`SignInExpiredError` with :data:`SIGN_IN_AGAIN` (one line), wherever orch
meets it (:func:`.api.sign_in_lapsed` tells it from other refresh failures).

Flows:

- ``sign_in(browser=True)``: pydrive2's ``LocalWebserverAuth``: the browser opens
  Google's consent page and redirects back to a server on localhost.
- ``sign_in(browser=False)``: for a machine without a browser (the out-of-band
  flow is blocked by Google). orch prints the consent URL; you open it on any
  machine, sign in, and paste back the address the browser was redirected to
  (``http://localhost:8080/?code=…``: the page itself will not load, which is fine).
- a service-account key (for Shared Drives): used as it is, no sign-in.

Credentials are written under ``.orch/`` with mode 0600 (they are never in a job
snapshot: ``.orch`` and ``credentials*.json`` are always excluded). Access tokens
are refreshed by oauth2client when Drive answers 401 (offline access gives the
refresh token). pydrive2 is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...errors import AuthError, SignInExpiredError, UsageError
from ...logs import get_logger

log = get_logger(__name__)

SCOPE = "https://www.googleapis.com/auth/drive"
SCOPES = {"drive": SCOPE, "drive.file": "https://www.googleapis.com/auth/drive.file"}
TESTING_LAPSE = 7 * 86400.0  # refresh tokens of an OAuth app in Testing status
SIGN_IN_AGAIN = ("the Drive sign-in has expired or was revoked (Google answered "
                 "invalid_grant): run `orch auth` again")
REDIRECT = "http://localhost:8080/"
CREDENTIALS_ENV = "ORCH_DRIVE_CREDENTIALS"


@contextlib.contextmanager
def _private_files() -> Iterator[None]:
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def scope_url(setting: str) -> str:
    """The OAuth scope of the ``drive_scope`` setting (``drive`` or ``drive.file``)."""
    try:
        return SCOPES[setting.strip()]
    except KeyError:
        raise UsageError(f"setting drive_scope: bad value {setting!r} (expected drive or "
                         "drive.file)") from None


def record_path(saved: Path) -> Path:
    """Where :func:`sign_in` records when it signed in, beside the credentials."""
    return saved.with_name(saved.stem + ".signin.json")


def signed_in_at(saved: Path) -> float | None:
    """When `orch auth` last signed in with ``saved`` (None: not recorded)."""
    try:
        at = json.loads(record_path(saved).read_text()).get("signed_in_at")
    except (OSError, ValueError, AttributeError):
        return None
    return float(at) if isinstance(at, (int, float)) else None


def lapse_text(at: float | None, now: float | None = None) -> str:
    """What `orch auth status` says about when a user sign-in lapses."""
    def day(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))

    if at is None:
        return ("when orch signed in is not recorded (`orch auth` records it); if your OAuth "
                "app is in Testing status, a sign-in lapses 7 days after it was made; "
                "publish the app to keep it")
    end = at + TESTING_LAPSE
    if end <= (now if now is not None else time.time()):
        return (f"signed in {day(at)}; if your OAuth app is in Testing status, this sign-in "
                f"lapsed on {day(end)} (7 days): publish the app, then run `orch auth` again")
    return (f"signed in {day(at)}; if your OAuth app is in Testing status, this sign-in "
            f"lapses on {day(end)} (7 days); publish it to keep it")


def _settings(client_secrets: Path, saved: Path, scope: str) -> dict[str, Any]:
    return {
        "client_config_backend": "file",
        "client_config_file": str(client_secrets),
        "save_credentials": True,
        "save_credentials_backend": "file",
        "save_credentials_file": str(saved),
        "get_refresh_token": True,
        "oauth_scope": [scope],
    }


def code_from(answer: str) -> str:
    """The authorization code in a pasted redirect address (or a bare code)."""
    answer = answer.strip()
    if "://" not in answer and "=" not in answer:
        if not answer:
            raise UsageError("nothing was pasted: no authorization code")
        return answer  # a bare code
    query = urllib.parse.urlparse(answer).query or answer.split("?", 1)[-1]
    params = urllib.parse.parse_qs(query)
    if "error" in params:
        raise AuthError(f"Google refused the sign-in: {params['error'][0]}")
    if "code" not in params:
        raise UsageError("no authorization code in what was pasted")
    return params["code"][0]


def sign_in(client_secrets: Path, saved: Path, browser: bool = True,
            ask: Callable[[str], str] = input, ports: tuple[int, ...] = (8080, 8090),
            launch_browser: bool = True, scope: str = SCOPE) -> Any:
    """Run the OAuth flow for the user's own OAuth client and save the credentials
    (refresh token included) to ``saved`` with mode 0600, and when it signed in
    (:func:`record_path`). Returns them."""
    try:
        from pydrive2.auth import AuthenticationError, GoogleAuth, RefreshError
    except ImportError as exc:
        raise UsageError("signing in to Drive needs orch's drive extra: "
                         "pip install 'orch[drive]'") from exc

    if not client_secrets.is_file():
        raise UsageError(
            f"no OAuth client file at {client_secrets}: create a Desktop OAuth client in "
            "Google Cloud Console and save its JSON there (see README, 'Drive')"
        )
    saved.parent.mkdir(parents=True, exist_ok=True)
    gauth = GoogleAuth(settings=_settings(client_secrets, saved, scope))
    try:
        with _private_files(), warnings.catch_warnings():
            # oauth2client warns that the credentials file does not exist yet: expected
            warnings.filterwarnings("ignore", message="Cannot access", category=UserWarning)
            if browser:
                gauth.LocalWebserverAuth(port_numbers=list(ports),
                                         launch_browser=launch_browser)
            else:
                gauth.GetFlow()
                gauth.flow.redirect_uri = REDIRECT
                url = gauth.GetAuthUrl()
                answer = ask(
                    "Open this address in a browser on any machine, sign in, then paste "
                    f"the address you are sent to (it starts with {REDIRECT}):\n\n  {url}\n\n> "
                )
                gauth.Authenticate(code_from(answer))
                gauth.SaveCredentials()
    except (AuthenticationError, RefreshError) as exc:
        raise AuthError(f"Drive sign-in failed: {exc}") from exc
    os.chmod(saved, 0o600)
    with _private_files():
        record_path(saved).write_text(json.dumps({"signed_in_at": time.time(),
                                                  "scope": scope}))
    if getattr(gauth.credentials, "refresh_token", None) is None:
        log.warning("no refresh token was granted: you will have to sign in again")
    return gauth.credentials


def load_credentials(path: Path) -> Any:
    """Credentials from ``path``: saved by :func:`sign_in`, or a service-account key."""
    if not path.is_file():
        raise AuthError(f"not signed in to Drive ({path} missing): run `orch auth`")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AuthError(f"unreadable Drive credentials {path}: {exc}") from exc
    if data.get("type") == "service_account":
        from oauth2client.service_account import ServiceAccountCredentials

        return ServiceAccountCredentials.from_json_keyfile_dict(data, scopes=[SCOPE])
    from oauth2client.file import Storage

    creds = Storage(str(path)).get()
    if creds is None:
        raise AuthError(f"unusable Drive credentials in {path}: run `orch auth` again")
    return creds


def use_service_account(key: Path, saved: Path) -> None:
    """Adopt a service-account key (for Shared Drives): copied to ``saved``, 0600."""
    try:
        data = json.loads(key.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read service-account key {key}: {exc}") from exc
    if data.get("type") != "service_account" or "private_key" not in data:
        raise UsageError(f"{key} is not a service-account key file")
    saved.parent.mkdir(parents=True, exist_ok=True)
    with _private_files():
        saved.write_text(json.dumps(data))
    os.chmod(saved, 0o600)
    record_path(saved).unlink(missing_ok=True)  # a service account's sign-in never lapses


def whoami(credentials: Any, api_url: str | None = None) -> dict[str, str]:
    """Who is signed in, and with which scope (one about.get request)."""
    from .api import build_service

    try:
        about = build_service(credentials, api_url).about().get(
            fields="user(displayName,emailAddress)").execute()
    except Exception as exc:
        from .api import sign_in_lapsed

        if sign_in_lapsed(exc):
            raise SignInExpiredError(SIGN_IN_AGAIN) from None
        raise AuthError(f"Drive did not accept the credentials: {exc}") from exc
    scopes = getattr(credentials, "scopes", None) or [SCOPE]
    user = about.get("user", {})
    return {"name": user.get("displayName", ""), "email": user.get("emailAddress", ""),
            "scope": " ".join(sorted(scopes)),
            "kind": "service account" if hasattr(credentials, "service_account_email")
            else "user"}
