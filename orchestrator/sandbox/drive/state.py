"""The fake Drive's store: files, contents, the change log, upload sessions.

Everything here runs under :attr:`DriveState.lock` (the HTTP layer takes it
around each operation). Times are integer epoch milliseconds, strictly
increasing across writes, so ``modifiedTime`` strings (which carry
milliseconds) order writes exactly and ``modifiedTime > 'X'`` queries behave.

Listing lag: every write appends a change holding a metadata snapshot and the
monotonic time of the write. With ``lag > 0`` files.list and changes.list are
computed from the changes older than ``lag`` seconds, while files.get reads the
current state: Drive's eventually consistent listings.

Records and constants are in :mod:`.records`, metadata checks in :mod:`.metadata`,
the ``q`` language and ``orderBy`` in :mod:`.query`.

Shared Drives (:meth:`DriveState.add_drive`): a drive's id is also the id of its
root folder; every file under it carries that ``drive_id`` (``driveId`` in its
resource). Who may see them (``supportsAllDrives``, ``corpora``, ``driveId``) is
decided by :mod:`.shared`; this store only records which drive a file is in.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any

from . import resources as R
from .errors import DriveError, not_found
from .metadata import check_metadata, merge_props, meta_time
from .records import (
    ROOT_ID,
    ROOT_NAME,
    Change,
    FileRecord,
    UploadSession,
    is_google_type,
    new_id,
)
from .resources import FOLDER_MIME
from .revisions import Revision, Revisions


class DriveState:
    """One user's My Drive: the file tree, contents, change log and sessions."""

    def __init__(self, user_email: str = "tester@example.com",
                 list_trashed_by_default: bool = True,
                 coalesce_changes: bool = True) -> None:
        self.lock = threading.RLock()
        self.user_email = user_email
        self.list_trashed_by_default = list_trashed_by_default
        self.coalesce_changes = coalesce_changes
        self.reset()

    # ------------------------------------------------------------------ basics
    def reset(self) -> None:
        """Forget every file, change and upload session (the root stays)."""
        with self.lock:
            self._last_ms = 0
            self._seq = 0
            now = self._now()
            self.root = FileRecord(ROOT_ID, ROOT_NAME, FOLDER_MIME, [], now, now, 1, 0)
            self.files: dict[str, FileRecord] = {}
            self.contents: dict[str, bytes] = {}
            self.changes: list[Change] = []
            self.sessions: dict[str, UploadSession] = {}
            self.revisions = Revisions()
            self.drives: dict[str, FileRecord] = {}  # Shared Drives' root folders, by id
            self._removed_drive: dict[str, str | None] = {}

    def add_drive(self, name: str) -> FileRecord:
        """A new Shared Drive named ``name`` (its root folder: id = the drive's id)."""
        with self.lock:
            now = self._now()
            did = "0A" + secrets.token_urlsafe(12)[:16] + "Uk9PVA"
            rec = FileRecord(did, name, FOLDER_MIME, [], now, now, 1, 0, drive_id=did)
            self.drives[did] = rec
            return rec

    def drive_of(self, file_id: str) -> str | None:
        """The Shared Drive of ``file_id`` (None for My Drive or an unknown id)."""
        fid = self.resolve(file_id)
        rec = self.drives.get(fid) or self.files.get(fid)
        return rec.drive_id if rec else None

    def _now(self) -> int:
        ms = max(int(time.time() * 1000), self._last_ms + 1)
        self._last_ms = ms
        return ms

    def resolve(self, file_id: str) -> str:
        """``root`` → the root folder's id; other ids unchanged."""
        return ROOT_ID if file_id == "root" else file_id

    def get(self, file_id: str) -> FileRecord:
        """The current record of ``file_id`` (404 if unknown or deleted)."""
        fid = self.resolve(file_id)
        if fid == ROOT_ID:
            return self.root
        rec = self.files.get(fid) or self.drives.get(fid)
        if rec is None:
            raise not_found(file_id)
        return rec

    def content(self, file_id: str) -> bytes:
        """The bytes of a binary file (403 fileNotDownloadable for folders)."""
        rec = self.get(file_id)
        if rec.size is None:
            raise DriveError(403, "fileNotDownloadable",
                             "Only files with binary content can be downloaded. Use Export "
                             "with Docs Editors files.", location="alt")
        return self.contents.get(rec.id, b"")

    def _record(self, file_id: str, rec: FileRecord | None) -> None:
        drive = rec.drive_id if rec else self._removed_drive.pop(file_id, None)
        self.changes.append(Change(len(self.changes) + 1, file_id, self._now(),
                                   time.monotonic(), rec.snapshot() if rec else None, drive))

    # ------------------------------------------------------------- rendering
    def user(self, email: str | None = None) -> dict[str, Any]:
        """A ``drive#user`` for ``email`` (default: the drive's owner)."""
        return R.user(email or self.user_email)

    def resource(self, rec: FileRecord) -> dict[str, Any]:
        """The full ``drive#file`` resource of ``rec`` (``fields`` filters it later)."""
        return R.file_resource(rec, self.user_email)

    def change_resource(self, ch: Change) -> dict[str, Any]:
        """A ``drive#change`` for ``ch``."""
        return R.change_resource(ch, self.user_email)

    def about(self, email: str | None) -> dict[str, Any]:
        """about.get's full resource for the signed-in ``email``."""
        return R.about(self.files.values(), email or self.user_email)

    # ---------------------------------------------------------------- writes
    def _set_content(self, rec: FileRecord, data: bytes) -> None:
        self.contents[rec.id] = bytes(data)
        rec.size = len(data)
        rec.md5 = hashlib.md5(data).hexdigest()
        rec.sha1 = hashlib.sha1(data).hexdigest()
        rec.sha256 = hashlib.sha256(data).hexdigest()
        rec.head_revision = "0B" + secrets.token_urlsafe(18)[:24]
        self.revisions.add(rec.id, Revision(rec.head_revision, self._last_ms, len(data), rec.md5,
                                            rec.mime_type, rec.original_filename or rec.name))

    def _check_parent(self, parent_id: str) -> str:
        pid = self.resolve(parent_id)
        parent = self.root if pid == ROOT_ID else self.files.get(pid) or self.drives.get(pid)
        if parent is None:
            raise not_found(parent_id)
        if not parent.is_folder:
            raise DriveError(403, "cannotAddParent",
                             "The specified parent is not a folder.")
        return pid

    def create(self, meta: dict[str, Any], data: bytes | None = None,
               media_mime: str | None = None) -> FileRecord:
        """files.create: ``meta`` is the request body, ``data`` the media (if any)."""
        check_metadata(meta, creating=True)
        parents = [self._check_parent(p) for p in (meta.get("parents") or ["root"])]
        if len(parents) > 1:
            raise DriveError(403, "cannotAddParent",
                             "A file can have only one parent folder.")
        fid = meta.get("id") or new_id()
        if fid in self.files or fid == ROOT_ID:
            raise DriveError(409, "duplicate", "A file already exists with the provided ID.")
        mime = meta.get("mimeType") or media_mime or "application/octet-stream"
        now = self._now()
        created = meta_time(meta, "createdTime", now)
        self._seq += 1
        rec = FileRecord(fid, str(meta.get("name") or "Untitled"), mime, parents, created,
                         meta_time(meta, "modifiedTime", now), 1, self._seq,
                         starred=bool(meta.get("starred", False)),
                         description=str(meta.get("description") or ""),
                         original_filename=meta.get("originalFilename"),
                         app_properties=merge_props({}, meta.get("appProperties") or {}),
                         properties=merge_props({}, meta.get("properties") or {}),
                         drive_id=self.drive_of(parents[0]))
        if not is_google_type(mime):
            self._set_content(rec, data or b"")
        if meta.get("trashed"):
            rec.trashed = rec.explicitly_trashed = True
            rec.trashed_time = now
        self.files[fid] = rec
        self._record(fid, rec)
        return rec

    def update(self, file_id: str, meta: dict[str, Any], data: bytes | None = None,
               add_parents: str = "", remove_parents: str = "") -> FileRecord:
        """files.update: PATCH ``meta``, move between parents, replace content."""
        check_metadata(meta, creating=False)
        rec = self.get(file_id)
        if rec.id == ROOT_ID or rec.id in self.drives:
            raise DriveError(403, "insufficientFilePermissions",
                             "The user does not have sufficient permissions for this file.")
        adds = [self._check_parent(p) for p in add_parents.split(",") if p.strip()]
        removes = [self.resolve(p.strip()) for p in remove_parents.split(",") if p.strip()]
        parents = [p for p in rec.parents if p not in removes]
        for p in adds:
            if p not in parents:
                parents.append(p)
        if len(parents) > 1:
            raise DriveError(403, "cannotAddParent",
                             "Increasing the number of parents is not allowed. A file can "
                             "only have one parent folder.")
        for p in adds:
            if p == rec.id or p in self._descendant_ids(rec.id):
                raise DriveError(400, "invalidParent", "A folder cannot contain itself.")
        now = self._now()
        touched = data is not None or any(k in meta for k in (
            "name", "mimeType", "description", "appProperties", "properties",
            "originalFilename"))
        rec.parents = parents
        if adds:
            rec.drive_id = self.drive_of(adds[0])
        if "name" in meta:
            rec.name = str(meta["name"])
        if meta.get("mimeType"):
            rec.mime_type = str(meta["mimeType"])
        if "description" in meta:
            rec.description = str(meta["description"] or "")
        if "starred" in meta:
            rec.starred = bool(meta["starred"])
        if "originalFilename" in meta:
            rec.original_filename = meta["originalFilename"]
        if "appProperties" in meta:
            rec.app_properties = merge_props(rec.app_properties, meta["appProperties"])
        if "properties" in meta:
            rec.properties = merge_props(rec.properties, meta["properties"])
        if data is not None:
            self._set_content(rec, data)
        if touched:
            rec.modified = now
        if "modifiedTime" in meta:
            rec.modified = meta_time(meta, "modifiedTime", now)
        rec.version += 1
        cascade: list[FileRecord] = []
        if "trashed" in meta and bool(meta["trashed"]) != rec.explicitly_trashed:
            trash = bool(meta["trashed"])
            rec.trashed = rec.explicitly_trashed = trash
            rec.trashed_time = now if trash else None
            for did in self._descendant_ids(rec.id):
                d = self.files[did]
                if d.explicitly_trashed or d.trashed == trash:
                    continue
                d.trashed = trash
                d.trashed_time = now if trash else None
                d.version += 1
                cascade.append(d)
        self._record(rec.id, rec)
        for d in cascade:
            self._record(d.id, d)
        return rec

    def _descendant_ids(self, folder_id: str) -> list[str]:
        children: dict[str, list[str]] = {}
        for f in self.files.values():
            for p in f.parents:
                children.setdefault(p, []).append(f.id)
        out: list[str] = []
        stack = [folder_id]
        while stack:
            for c in children.get(stack.pop(), []):
                if c not in out:
                    out.append(c)
                    stack.append(c)
        return out

    def delete(self, file_id: str) -> None:
        """files.delete: remove the file and, for a folder, all under it."""
        rec = self.get(file_id)
        if rec.id == ROOT_ID or rec.id in self.drives:
            raise DriveError(403, "insufficientFilePermissions",
                             "The user does not have sufficient permissions for this file.")
        for fid in [rec.id, *self._descendant_ids(rec.id)]:
            gone = self.files.pop(fid, None)
            self._removed_drive[fid] = gone.drive_id if gone else None
            self.contents.pop(fid, None)
            self.revisions.forget(fid)
            self._record(fid, None)

    def empty_trash(self) -> None:
        """files.emptyTrash: delete every explicitly trashed file (and its subtree)."""
        for rec in [f for f in self.files.values() if f.explicitly_trashed]:
            if rec.id in self.files:
                self.delete(rec.id)

    # ------------------------------------------------------------ sessions
    def new_session(self, file_id: str | None, meta: dict[str, Any], params: dict[str, str],
                    mime_type: str | None, total: int | None) -> UploadSession:
        """Start a resumable upload (metadata is checked now, as Drive does)."""
        if file_id is not None:
            check_metadata(meta, creating=False)
            file_id = self.get(file_id).id
        else:
            check_metadata(meta, creating=True)
            for p in meta.get("parents") or []:
                self._check_parent(p)
        sid = "ADPyc" + secrets.token_urlsafe(48)
        s = UploadSession(sid, file_id, meta, params, mime_type, total)
        self.sessions[sid] = s
        return s

    def session(self, upload_id: str) -> UploadSession:
        """An upload session by id (404 when unknown, as for an expired session)."""
        s = self.sessions.get(upload_id)
        if s is None:
            raise DriveError(404, "notFound", "Upload session not found or expired.")
        return s

    def finish_session(self, s: UploadSession) -> FileRecord:
        """Create or update the file from a complete session's bytes."""
        if s.result_id is not None:
            return self.get(s.result_id)
        if s.file_id is None:
            rec = self.create(s.metadata, bytes(s.data), s.mime_type)
        else:
            rec = self.update(s.file_id, s.metadata, bytes(s.data),
                              s.params.get("addParents", ""),
                              s.params.get("removeParents", ""))
        s.result_id = rec.id
        if s.params.get("keepRevisionForever", "").lower() in ("true", "1"):
            self.revisions.keep_head_forever(rec.id)
        return rec

    def dump(self) -> list[dict[str, Any]]:
        """Every file's full resource, in creation order (for inspection)."""
        return [self.resource(f) for f in sorted(self.files.values(), key=lambda f: f.seq)]

    def path_of(self, rec: FileRecord) -> str:
        """``a/b/c`` from the root (for inspection; first parent only)."""
        parts = [rec.name]
        seen = {rec.id}
        cur = rec
        while cur.parents and cur.parents[0] != ROOT_ID:
            nxt = self.files.get(cur.parents[0])
            if nxt is None or nxt.id in seen:
                break
            seen.add(nxt.id)
            parts.append(nxt.name)
            cur = nxt
        return "/".join(reversed(parts))
