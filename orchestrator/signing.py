"""Signatures on what the daemon writes into a hub, so a worker runs only this
project's jobs.

Anyone who can write to a hub (a shared folder or Shared Drive, a lab's SFTP host,
a cluster's shared path) could plant a manifest, and a worker, which holds the
user's credentials, would run it. So the daemon signs every manifest and
assignment with an HMAC-SHA256 under the project's key (:mod:`.identity`; it never
enters a hub), and a worker refuses anything unsigned or mis-signed. A manifest
names its blobs by sha256, and the worker checks every blob it downloads against
that hash, so a blob swapped after signing is refused too.

Standard library only (the worker imports this).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import TypeVar

from .errors import SignatureError, UsageError
from .protocol import Assignment, Manifest

Signed = TypeVar("Signed", Manifest, Assignment)
KEY_ENV = "ORCH_HUB_KEY"


def _digest(doc: Manifest | Assignment, key: str) -> str:
    body = doc.to_dict()
    body.pop("signature", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(bytes.fromhex(key), canonical, hashlib.sha256).hexdigest()


def sign(doc: Signed, key: str) -> Signed:
    """``doc`` with its signature under ``key`` (hex)."""
    return dataclasses.replace(doc, signature=_digest(doc, key))


def verify(doc: Signed, key: str) -> Signed:
    """``doc`` if signed under ``key``; SignatureError (one line) otherwise."""
    if not doc.signature:
        raise SignatureError(f"unsigned {doc.NAME} for job {doc.job_id}: refused (not "
                             "written by this project's daemon)")
    if not hmac.compare_digest(doc.signature, _digest(doc, key)):
        raise SignatureError(f"{doc.NAME} for job {doc.job_id} is not signed with this "
                             "project's key: refused (someone else wrote to the hub?)")
    return doc


def load_key(key_file: str | None, hub_folder: Path | None = None) -> str | None:
    """The worker's copy of the project's key: ``key_file`` (a project's
    ``.orch/project.json`` or a file holding the key in hex), else $ORCH_HUB_KEY,
    else, for a hub folder inside a project (``.orch/hub``), the project's own key
    beside it. None when there is none. UsageError for an unreadable key."""
    text = None
    if key_file:
        try:
            text = Path(key_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"cannot read the hub key {key_file}: {exc.strerror}") from None
    elif os.environ.get(KEY_ENV):
        text = os.environ[KEY_ENV].strip()
    elif hub_folder is not None and (hub_folder.parent / "project.json").is_file():
        text = (hub_folder.parent / "project.json").read_text(encoding="utf-8")
    if text is None:
        return None
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["key"])
        except (ValueError, KeyError, TypeError):
            raise UsageError("the hub key file holds no key") from None
    try:
        bytes.fromhex(text)
    except ValueError:
        raise UsageError("the hub key is not hex: copy it again (`orch colab --key` prints "
                         "it)") from None
    return text


NO_KEY = ("no hub key: this worker cannot tell this project's jobs from anyone else's. "
          "Give it the key: --key-file PROJECT/.orch/project.json, or ORCH_HUB_KEY=… "
          "(`orch colab --key` prints it; in Colab, add it as the secret ORCH_HUB_KEY)")
