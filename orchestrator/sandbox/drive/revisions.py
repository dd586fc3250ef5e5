"""Revisions of binary files, as Drive v3 keeps them.

Every upload of content (files.create or files.update with media) adds a head
revision; metadata-only updates add none. A revision is kept until deleted
unless Drive purges it: revisions not marked ``keepForever`` go after 30 days or
when a file has more than :data:`MAX_AUTO` of them (the fake purges only by
count). ``keepRevisionForever=true`` on create/update marks the new head
revision ``keepForever``. ``revisions.delete`` refuses the head (the last
remaining version of the file). Only metadata is kept here (no old content).

Runs under :attr:`DriveState.lock`, like the rest of the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import fields as F
from .errors import DriveError
from .resources import rfc3339

MAX_AUTO = 100  # revisions not kept forever: Drive keeps at most this many

REVISION: F.Schema = {k: None for k in (
    "exportLinks", "id", "keepForever", "kind", "lastModifyingUser", "md5Checksum",
    "mimeType", "modifiedTime", "originalFilename", "publishAuto", "published",
    "publishedLink", "publishedOutsideDomain", "size")}
REVISION_LIST: F.Schema = {"kind": None, "nextPageToken": None, "revisions": REVISION}
DEFAULT_REVISION: F.Tree = {"kind": None, "id": None, "mimeType": None, "modifiedTime": None}
DEFAULT_REVISION_LIST: F.Tree = {"kind": None, "nextPageToken": None,
                                 "revisions": DEFAULT_REVISION}


@dataclass
class Revision:
    """One version of a file's content."""

    id: str
    modified: int
    size: int
    md5: str
    mime_type: str
    original_filename: str
    keep_forever: bool = False

    def resource(self, owner: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "drive#revision", "id": self.id, "mimeType": self.mime_type,
                "modifiedTime": rfc3339(self.modified), "keepForever": self.keep_forever,
                "published": False, "md5Checksum": self.md5, "size": str(self.size),
                "originalFilename": self.original_filename, "lastModifyingUser": owner}


class Revisions:
    """The revisions of every file, oldest first (the last one is the head)."""

    def __init__(self) -> None:
        self.by_file: dict[str, list[Revision]] = {}

    def add(self, file_id: str, rev: Revision) -> None:
        """A new head revision; the oldest auto-kept ones beyond MAX_AUTO are purged."""
        revs = self.by_file.setdefault(file_id, [])
        revs.append(rev)
        auto = [r for r in revs[:-1] if not r.keep_forever]
        for r in auto[:max(0, len(auto) + 1 - MAX_AUTO)]:
            revs.remove(r)

    def keep_head_forever(self, file_id: str) -> None:
        revs = self.by_file.get(file_id)
        if revs:
            revs[-1].keep_forever = True

    def forget(self, file_id: str) -> None:
        self.by_file.pop(file_id, None)

    def list(self, file_id: str) -> list[Revision]:
        return list(self.by_file.get(file_id, []))

    def get(self, file_id: str, rev_id: str) -> Revision:
        for r in self.by_file.get(file_id, []):
            if r.id == rev_id:
                return r
        raise DriveError(404, "notFound", f"Revision not found: {rev_id}.",
                         location="revisionId")

    def delete(self, file_id: str, rev_id: str) -> None:
        """revisions.delete: any revision but the head."""
        rev = self.get(file_id, rev_id)
        revs = self.by_file[file_id]
        if rev is revs[-1]:
            raise DriveError(400, "cannotDeleteOnlyRevision",
                             "The head revision of a file cannot be deleted; delete the "
                             "file, or upload new content first.")
        revs.remove(rev)


def revisions_api(state: Any, method: str, file_id: str, rev_id: str | None,
                  selection: F.Tree | None) -> Any:
    """revisions.list / get (metadata) / delete for the HTTP layer: a Reply."""
    from .control import Reply

    rec = state.get(file_id)
    owner = state.user()
    if rec.size is None:  # folders and Google types: no binary revisions here
        revs: list[Revision] = []
    else:
        revs = state.revisions.list(rec.id)
    if rev_id is None and method == "GET":
        tree = F.select(selection, REVISION_LIST, DEFAULT_REVISION_LIST)
        return Reply.json(200, F.apply({"kind": "drive#revisionList",
                                        "revisions": [r.resource(owner) for r in revs]}, tree))
    if rev_id is not None and method == "GET":
        tree = F.select(selection, REVISION, DEFAULT_REVISION)
        return Reply.json(200, F.apply(state.revisions.get(rec.id, rev_id).resource(owner),
                                       tree))
    if rev_id is not None and method == "DELETE":
        state.revisions.delete(rec.id, rev_id)
        return Reply(204)
    raise DriveError(404, "notFound", f"Method not found: {method} revisions")
