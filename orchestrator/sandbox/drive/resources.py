"""Rendering the fake's records as Drive v3 JSON resources (``drive#file``,
``drive#change``, ``drive#user``, ``drive#about``), before ``fields`` filtering."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import Change, FileRecord

FOLDER_MIME = "application/vnd.google-apps.folder"
QUOTA_LIMIT = 15 * 1024 ** 3


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as Drive writes times: ``2024-05-01T12:00:00.123Z``."""
    dt = datetime.fromtimestamp(ms // 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def user(email: str) -> dict[str, Any]:
    """A ``drive#user`` for ``email``; the permission id is stable per email."""
    perm = str(int(hashlib.sha1(email.encode()).hexdigest(), 16) % 10 ** 20).zfill(20)
    return {"kind": "drive#user", "displayName": email.split("@")[0].replace(".", " ").title(),
            "emailAddress": email, "me": True, "permissionId": perm,
            "photoLink": "https://lh3.googleusercontent.com/a/fake=s64"}


def file_resource(rec: FileRecord, owner_email: str) -> dict[str, Any]:
    """The full ``drive#file`` resource of ``rec``, owned by ``owner_email``."""
    owner = user(owner_email)
    res: dict[str, Any] = {
        "kind": "drive#file", "id": rec.id, "name": rec.name, "mimeType": rec.mime_type,
        "starred": rec.starred, "trashed": rec.trashed,
        "explicitlyTrashed": rec.explicitly_trashed, "spaces": ["drive"],
        "version": str(rec.version), "createdTime": rfc3339(rec.created),
        "modifiedTime": rfc3339(rec.modified), "modifiedByMeTime": rfc3339(rec.modified),
        "viewedByMeTime": rfc3339(rec.modified), "modifiedByMe": True, "viewedByMe": True,
        "ownedByMe": True, "owners": [owner], "lastModifyingUser": owner,
        "shared": False, "hasThumbnail": False, "thumbnailVersion": "0",
        "isAppAuthorized": True, "copyRequiresWriterPermission": False,
        "writersCanShare": True, "viewersCanCopyContent": True,
        "permissionIds": [owner["permissionId"]],
        "quotaBytesUsed": str(rec.size or 0),
        "iconLink": f"https://drive-thirdparty.googleusercontent.com/16/type/{rec.mime_type}",
        "capabilities": {"canEdit": True, "canDelete": True, "canTrash": True,
                         "canDownload": rec.size is not None, "canRename": True,
                         "canAddChildren": rec.is_folder, "canListChildren": rec.is_folder},
    }
    if rec.is_folder:
        res["webViewLink"] = f"https://drive.google.com/drive/folders/{rec.id}"
    else:
        res["webViewLink"] = f"https://drive.google.com/file/d/{rec.id}/view?usp=drivesdk"
    if rec.parents:
        res["parents"] = list(rec.parents)
    if rec.drive_id:  # in a Shared Drive: the drive owns it
        res.update(driveId=rec.drive_id, teamDriveId=rec.drive_id, ownedByMe=False)
        del res["owners"]
    if rec.trashed and rec.trashed_time is not None:
        res["trashedTime"] = rfc3339(rec.trashed_time)
        res["trashingUser"] = owner
    if rec.description:
        res["description"] = rec.description
    if rec.app_properties:
        res["appProperties"] = dict(rec.app_properties)
    if rec.properties:
        res["properties"] = dict(rec.properties)
    if rec.size is not None:
        res.update({
            "size": str(rec.size), "md5Checksum": rec.md5, "sha1Checksum": rec.sha1,
            "sha256Checksum": rec.sha256, "headRevisionId": rec.head_revision,
            "originalFilename": rec.original_filename or rec.name,
            "webContentLink": f"https://drive.google.com/uc?id={rec.id}&export=download"})
        if "." in rec.name.strip("."):
            ext = rec.name.split(".", 1)[1]
            res["fullFileExtension"] = ext
            res["fileExtension"] = rec.name.rsplit(".", 1)[1]
    return res


def change_resource(ch: Change, owner_email: str) -> dict[str, Any]:
    """A ``drive#change`` for ``ch``."""
    res: dict[str, Any] = {"kind": "drive#change", "type": "file", "changeType": "file",
                           "time": rfc3339(ch.time), "removed": ch.snapshot is None,
                           "fileId": ch.file_id}
    if ch.snapshot is not None:
        res["file"] = file_resource(ch.snapshot, owner_email)
    return res


def about(files: Iterable[FileRecord], email: str) -> dict[str, Any]:
    """about.get's full resource for ``email``; usage sums the sizes of ``files``."""
    files = list(files)
    usage = sum(f.size or 0 for f in files)
    trash = sum(f.size or 0 for f in files if f.trashed)
    return {"kind": "drive#about", "user": user(email),
            "storageQuota": {"limit": str(QUOTA_LIMIT), "usage": str(usage),
                             "usageInDrive": str(usage), "usageInDriveTrash": str(trash)},
            "maxUploadSize": "5242880000000", "appInstalled": False,
            "canCreateDrives": False, "canCreateTeamDrives": False,
            "importFormats": {}, "exportFormats": {}, "maxImportSizes": {},
            "folderColorPalette": ["#ac725e"], "driveThemes": [], "teamDriveThemes": []}
