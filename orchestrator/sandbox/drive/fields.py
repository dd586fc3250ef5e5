"""The ``fields`` parameter: parse a selection such as
``nextPageToken, files(id, name, parents)`` and apply it to a response.

A selection is a tree ``{name: subtree-or-None}``; ``None`` selects the whole
value and ``"*"`` selects every key of an object. Paths (``files/id``) are sugar
for nesting. Names are checked against the Drive v3 schemas, as Drive does
(``400 Invalid field selection``), so typos fail here as they would on Drive.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from .errors import DriveError

Tree = dict[str, Optional["Tree"]]
Schema = dict[str, Union["Schema", None]]

_FILE_KEYS = [
    "appProperties", "capabilities", "clientEncryptionDetails", "contentHints",
    "contentRestrictions", "copyRequiresWriterPermission", "createdTime", "description",
    "downloadRestrictions", "driveId", "explicitlyTrashed", "exportLinks", "fileExtension",
    "folderColorRgb", "fullFileExtension", "hasAugmentedPermissions", "hasThumbnail",
    "headRevisionId", "iconLink", "id", "imageMediaMetadata", "inheritedPermissionsDisabled",
    "isAppAuthorized", "kind", "labelInfo", "lastModifyingUser", "linkShareMetadata",
    "md5Checksum", "mimeType", "modifiedByMe", "modifiedByMeTime", "modifiedTime", "name",
    "originalFilename", "ownedByMe", "owners", "parents", "permissionIds", "permissions",
    "properties", "quotaBytesUsed", "resourceKey", "sha1Checksum", "sha256Checksum", "shared",
    "sharedWithMeTime", "sharingUser", "shortcutDetails", "size", "spaces", "starred",
    "teamDriveId", "thumbnailLink", "thumbnailVersion", "trashed", "trashedTime",
    "trashingUser", "version", "videoMediaMetadata", "viewedByMe", "viewedByMeTime",
    "viewersCanCopyContent", "webContentLink", "webViewLink", "writersCanShare",
]

FILE: Schema = {k: None for k in _FILE_KEYS}
FILE_LIST: Schema = {"files": FILE, "kind": None, "nextPageToken": None,
                     "incompleteSearch": None}
CHANGE: Schema = {"changeType": None, "drive": None, "driveId": None, "file": FILE,
                  "fileId": None, "kind": None, "removed": None, "teamDrive": None,
                  "teamDriveId": None, "time": None, "type": None}
CHANGE_LIST: Schema = {"changes": CHANGE, "kind": None, "newStartPageToken": None,
                       "nextPageToken": None}
START_PAGE_TOKEN: Schema = {"kind": None, "startPageToken": None}
USER: Schema = {"displayName": None, "emailAddress": None, "kind": None, "me": None,
                "permissionId": None, "photoLink": None}
ABOUT: Schema = {"appInstalled": None, "canCreateDrives": None, "canCreateTeamDrives": None,
                 "driveThemes": None, "exportFormats": None, "folderColorPalette": None,
                 "importFormats": None, "kind": None, "maxImportSizes": None,
                 "maxUploadSize": None, "storageQuota": None, "teamDriveThemes": None,
                 "user": USER}

#: What Drive returns for a file when ``fields`` is absent.
DEFAULT_FILE: Tree = {"kind": None, "id": None, "name": None, "mimeType": None}
DEFAULT_FILE_LIST: Tree = {"kind": None, "nextPageToken": None, "incompleteSearch": None,
                           "files": DEFAULT_FILE}
DEFAULT_CHANGE_LIST: Tree = {
    "kind": None, "nextPageToken": None, "newStartPageToken": None,
    "changes": {"kind": None, "type": None, "changeType": None, "time": None,
                "removed": None, "fileId": None, "file": DEFAULT_FILE}}


def _invalid(selection: str) -> DriveError:
    return DriveError(400, "invalidParameter", f"Invalid field selection {selection}",
                      location="fields")


def parse(text: str) -> Tree:
    """Parse a ``fields`` value into a selection tree (400 on bad syntax)."""
    pos = 0

    def parse_list(depth: int) -> Tree:
        nonlocal pos
        tree: Tree = {}
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            start = pos
            while pos < len(text) and (text[pos].isalnum() or text[pos] in "_/*."):
                pos += 1
            path = text[start:pos]
            if not path:
                raise _invalid(text)
            while pos < len(text) and text[pos].isspace():
                pos += 1
            sub: Tree | None = None
            if pos < len(text) and text[pos] == "(":
                pos += 1
                sub = parse_list(depth + 1)
                if pos >= len(text) or text[pos] != ")":
                    raise _invalid(text)
                pos += 1
                while pos < len(text) and text[pos].isspace():
                    pos += 1
            _insert(tree, [p for p in path.split("/")], sub, text)
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if depth == 0 and pos < len(text):
                raise _invalid(text)
            return tree

    return parse_list(0)


def _insert(tree: Tree, parts: list[str], sub: Tree | None, text: str) -> None:
    if any(not p for p in parts):
        raise _invalid(text)
    node = tree
    for part in parts[:-1]:
        child = node.get(part, {})
        if child is None:  # already selected whole
            return
        node[part] = child
        node = child
    last = parts[-1]
    if last in node and (node[last] is None or sub is None):
        node[last] = None
    elif last in node and sub is not None:
        existing = node[last]
        assert existing is not None
        existing.update(sub)
    else:
        node[last] = sub


def validate(tree: Tree, schema: Schema, prefix: str = "") -> None:
    """Reject names that ``schema`` does not have (400, as Drive does)."""
    for name, sub in tree.items():
        if name == "*":
            continue
        if name not in schema:
            raise _invalid(prefix + name)
        child = schema[name]
        if sub is not None and child is not None:
            validate(sub, child, prefix + name + "/")


def select(tree: Tree | None, schema: Schema, default: Tree) -> Tree:
    """The tree to apply: ``default`` when no selection was given, else the validated one."""
    if tree is None:
        return default
    validate(tree, schema)
    return tree


def apply(value: Any, tree: Tree | None) -> Any:
    """Keep only what ``tree`` selects from ``value`` (lists are mapped element-wise)."""
    if tree is None:
        return value
    if isinstance(value, list):
        return [apply(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    if "*" in tree:
        out = dict(value)
        for key, sub in tree.items():
            if key != "*" and key in out:
                out[key] = apply(out[key], sub)
        return out
    return {k: apply(value[k], sub) for k, sub in tree.items() if k in value}
