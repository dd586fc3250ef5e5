"""Checking the metadata a request writes: which fields are writable, property
limits, and times given as RFC 3339 strings. Pure functions; Drive's errors."""

from __future__ import annotations

from typing import Any

from . import query as q_lang
from .errors import DriveError, invalid

MAX_PROPERTY_BYTES = 124
MAX_PROPERTIES = 30

_READ_ONLY = {
    "kind", "md5Checksum", "sha1Checksum", "sha256Checksum", "size", "version",
    "quotaBytesUsed", "headRevisionId", "ownedByMe", "owners", "lastModifyingUser",
    "capabilities", "webViewLink", "webContentLink", "iconLink", "explicitlyTrashed",
    "trashedTime", "trashingUser", "spaces", "fileExtension", "fullFileExtension",
    "hasThumbnail", "thumbnailLink", "thumbnailVersion", "modifiedByMe", "viewedByMe",
    "shared", "sharingUser", "permissionIds", "permissions", "driveId", "teamDriveId",
    "isAppAuthorized", "exportLinks", "hasAugmentedPermissions", "linkShareMetadata",
    "resourceKey", "labelInfo", "imageMediaMetadata", "videoMediaMetadata",
}
_WRITABLE = {"id", "name", "mimeType", "parents", "appProperties", "properties",
             "description", "starred", "trashed", "modifiedTime", "createdTime",
             "originalFilename", "viewedByMeTime", "folderColorRgb", "contentHints",
             "copyRequiresWriterPermission", "writersCanShare", "shortcutDetails",
             "contentRestrictions", "downloadRestrictions", "inheritedPermissionsDisabled"}


def check_metadata(meta: dict[str, Any], creating: bool) -> None:
    """A files.create (``creating``) or files.update body: only writable fields, of the
    right shapes; raises Drive's 400/403 otherwise."""
    if not isinstance(meta, dict):
        raise invalid("Invalid JSON payload received.", reason="parseError")
    for key in meta:
        if key in _READ_ONLY or (key == "parents" and not creating) or \
                (key in ("id", "createdTime") and not creating):
            msg = ("The parents field is not directly writable in update requests. Use "
                   "the addParents and removeParents parameters instead."
                   if key == "parents" else
                   "The resource body includes fields which are not directly writable.")
            raise DriveError(403, "fieldNotWritable", msg)
        if key not in _WRITABLE:
            raise invalid(f"Invalid JSON payload received. Unknown name \"{key}\": "
                          "Cannot find field.", reason="parseError")
    for key in ("appProperties", "properties"):
        if key in meta and not isinstance(meta[key], dict):
            raise invalid(f"Invalid value for {key}", reason="invalid")


def merge_props(current: dict[str, str], given: dict[str, Any]) -> dict[str, str]:
    """``current`` properties updated by ``given`` (None removes a key), within Drive's
    limits of size and count."""
    out = dict(current)
    for k, v in given.items():
        if v is None:
            out.pop(k, None)
            continue
        v = str(v)
        if len(k.encode()) + len(v.encode()) > MAX_PROPERTY_BYTES:
            raise invalid(f"The size of the property '{k}' exceeds the limit of "
                          f"{MAX_PROPERTY_BYTES} bytes (key + value, UTF-8).",
                          reason="invalidProperty")
        out[k] = v
    if len(out) > MAX_PROPERTIES:
        raise invalid(f"A file may carry at most {MAX_PROPERTIES} properties per app.",
                      reason="invalidProperty")
    return out


def meta_time(meta: dict[str, Any], key: str, default: int) -> int:
    """The epoch milliseconds of the RFC 3339 time ``meta[key]``, or ``default``."""
    if not meta.get(key):
        return default
    try:
        return q_lang.parse_time(str(meta[key]))
    except DriveError:
        raise invalid(f"Invalid value for {key}: {meta[key]}", reason="invalid") from None
