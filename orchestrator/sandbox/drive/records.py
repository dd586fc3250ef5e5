"""The fake Drive's records: files, change-log entries, upload sessions, and the
constants of the store (ids, page sizes, property limits). Plain data: the store
(:mod:`.state`) owns and changes them under its lock."""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass, field
from typing import Any

from .resources import FOLDER_MIME

ROOT_ID = "0AFakeDriveRootFolderUk9PVA"
ROOT_NAME = "My Drive"
CHUNK_GRANULARITY = 256 * 1024
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100


def new_id() -> str:
    """A Drive-like file id: 33 URL-safe characters starting with ``1``."""
    return "1" + secrets.token_urlsafe(24)[:32]


def is_google_type(mime: str) -> bool:
    return mime.startswith("application/vnd.google-apps.")


@dataclass
class FileRecord:
    """One file's metadata (content lives in :attr:`DriveState.contents`)."""

    id: str
    name: str
    mime_type: str
    parents: list[str]
    created: int
    modified: int
    version: int
    seq: int
    trashed: bool = False
    explicitly_trashed: bool = False
    trashed_time: int | None = None
    starred: bool = False
    description: str = ""
    original_filename: str | None = None
    app_properties: dict[str, str] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    size: int | None = None
    md5: str | None = None
    sha1: str | None = None
    sha256: str | None = None
    head_revision: str | None = None
    drive_id: str | None = None  # the Shared Drive it is in; None: My Drive

    @property
    def is_folder(self) -> bool:
        return self.mime_type == FOLDER_MIME

    def snapshot(self) -> FileRecord:
        """An independent copy (for the change log)."""
        return copy.deepcopy(self)


@dataclass
class Change:
    """One entry of the change log; ``snapshot`` is None for a removal."""

    id: int
    file_id: str
    time: int
    mono: float
    snapshot: FileRecord | None
    drive_id: str | None = None  # the Shared Drive of the file (also for a removal)


@dataclass
class UploadSession:
    """A resumable upload: what to do when complete, and the bytes so far."""

    id: str
    file_id: str | None  # None: create a file; else update this one
    metadata: dict[str, Any]
    params: dict[str, str]
    mime_type: str | None
    total: int | None
    data: bytearray = field(default_factory=bytearray)
    result_id: str | None = None  # set once the upload completed

    @property
    def received(self) -> int:
        return len(self.data)
