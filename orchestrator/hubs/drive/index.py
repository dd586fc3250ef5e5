"""What a DriveHub knows of its Drive folder: an index kept by listings and the
changes feed, so that reads cost no request while nothing changed.

Drive allows duplicate names and its listings lag, so the index keeps, for every
hub path, *all* Drive folders of that path (two parties that created the same
folder at once each made one; reads merge their children, writes go to the
oldest) and, for every name, every file of that name (readers take the newest).

No I/O here: :class:`DriveIndex` is data plus the bookkeeping of adding and
dropping entries. Every method expects its caller to hold ``index.lock``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

FOLDER = "application/vnd.google-apps.folder"
FILE_FIELDS = "id,name,mimeType,parents,md5Checksum,size,version,modifiedTime,createdTime,trashed"


@dataclass(frozen=True)
class DriveFile:
    """The metadata orch keeps of one Drive file."""

    id: str
    name: str
    folder: bool
    parent: str | None
    md5: str | None
    size: int
    version: int
    modified: str
    created: str

    @classmethod
    def of(cls, f: dict[str, Any]) -> DriveFile:
        parents = f.get("parents") or [None]
        return cls(id=f["id"], name=f["name"], folder=f.get("mimeType") == FOLDER,
                   parent=parents[0], md5=f.get("md5Checksum"), size=int(f.get("size") or 0),
                   version=int(f.get("version") or 0), modified=f.get("modifiedTime") or "",
                   created=f.get("createdTime") or "")


def newest(files: list[DriveFile]) -> DriveFile:
    return max(files, key=lambda f: (f.modified, f.version, f.id))


def by_age(folders: list[DriveFile]) -> list[str]:
    """Ids of duplicate folders, oldest first (the one writers use)."""
    return [f.id for f in sorted(folders, key=lambda f: (f.created, f.id))]


def quote(text: str) -> str:
    """Escape a string literal for a Drive query."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


@dataclass
class Folder:
    """An indexed hub folder: one or more Drive folders of the same path.

    Reads merge their children; writes go to the oldest (``id``). ``complete``:
    every child of every one of them is indexed."""

    ids: list[str]
    children: dict[str, list[DriveFile]] = field(default_factory=dict)
    complete: bool = False

    @property
    def id(self) -> str:
        return self.ids[0]

    def parents_query(self) -> str:
        return "(" + " or ".join(f"'{i}' in parents" for i in self.ids) + ")"


class DriveIndex:
    """The folders and files of one hub, by hub path (``""`` is the hub's folder).

    ``chain[k]`` holds the ids of every Drive folder at level ``k`` of the hub's own
    path (``chain[0]`` is My Drive's root or the shared drive), so duplicates of the
    hub's folder, or of a folder above it, are merged when the feed shows them."""

    def __init__(self, folder_path: str) -> None:
        self.folder_path = folder_path
        self.lock = threading.RLock()
        self.folders: dict[str, Folder] = {}  # indexed folders by path
        self.path_of: dict[str, str] = {}  # folder id → path
        self.where: dict[str, str] = {}  # indexed file id → its folder's path
        self.chain: list[list[str]] = []
        self.content: dict[str, tuple[int, bytes]] = {}  # small files by id: (version, data)
        self.born: dict[str, str] = {}  # folder id → its createdTime, where known

    def note(self, folders: list[DriveFile]) -> None:
        """Remember when these folders were made (the oldest of a path is written to)."""
        for f in folders:
            if f.created:
                self.born[f.id] = f.created

    def order(self, folder: Folder) -> None:
        """Put a path's folders oldest first (unknown ages last), so that every party
        writes to the same one once it knows them all."""
        folder.ids.sort(key=lambda i: (self.born.get(i, "~"), i))

    def set_root(self, level: Folder) -> None:
        self.folders[""] = level
        for i in level.ids:
            self.path_of[i] = ""

    def entry(self, file_id: str) -> DriveFile | None:
        """The indexed metadata of ``file_id``."""
        folder = self.folders.get(self.where.get(file_id, "\0"))
        if folder is None:
            return None
        return next((x for xs in folder.children.values() for x in xs if x.id == file_id), None)

    def drop_entry(self, file_id: str) -> None:
        """Remove ``file_id`` from its folder's children."""
        folder = self.folders.get(self.where.pop(file_id, "\0"))
        if folder is None:
            return
        for name, files in list(folder.children.items()):
            kept = [x for x in files if x.id != file_id]
            if len(kept) != len(files):
                if kept:
                    folder.children[name] = kept
                else:
                    del folder.children[name]

    def forget_tree(self, path: str) -> None:
        """Drop the folder at ``path`` and everything indexed under it."""
        for p in [p for p in self.folders if p == path or p.startswith(path + "/")]:
            folder = self.folders.pop(p)
            for i in folder.ids:
                self.path_of.pop(i, None)
            for files in folder.children.values():
                for x in files:
                    self.where.pop(x.id, None)
                    self.content.pop(x.id, None)

    def remember(self, f: DriveFile) -> bool:
        """Index ``f``. False if the index already had it as it is."""
        parent_path = self.path_of.get(f.parent or "")
        if self.entry(f.id) == f and self.where.get(f.id) == parent_path:
            return False
        if self.path_of.get(f.id) == "":
            return False  # a copy of the hub root: never moved by us
        self.drop_entry(f.id)
        path = (f"{parent_path}/{f.name}" if parent_path else f.name) \
            if parent_path is not None else None
        if f.folder and f.id in self.path_of and self.path_of[f.id] != path:
            self.forget_tree(self.path_of[f.id])  # moved or renamed
        if parent_path is None:
            return False
        folder = self.folders.get(parent_path)
        if folder is not None:
            folder.children.setdefault(f.name, []).append(f)
            self.where[f.id] = parent_path
        if f.folder and path is not None:
            self.add_folder_id(path, f)
        return True

    def add_child(self, path: str, f: DriveFile) -> None:
        """Record ``f`` as a child of the folder at ``path`` (from a listing)."""
        folder = self.folders[path]
        if self.entry(f.id) is not None:
            self.drop_entry(f.id)
        folder.children.setdefault(f.name, []).append(f)
        self.where[f.id] = path
        if f.folder:
            self.add_folder_id(f"{path}/{f.name}" if path else f.name, f)

    def add_folder(self, path: str, folder: Folder) -> None:
        self.folders[path] = folder
        for i in folder.ids:
            self.path_of[i] = path

    def add_folder_id(self, path: str, f: DriveFile) -> None:
        """Record Drive folder ``f`` as (one of) the folder(s) at ``path``. A duplicate
        found later makes the path incomplete: its children get listed again."""
        known = self.folders.get(path)
        if known is None:
            self.folders[path] = Folder([f.id])
        elif f.id not in known.ids:
            known.ids.append(f.id)
            known.complete = False
        self.note([f])
        if known is not None:
            self.order(known)
        self.path_of[f.id] = path

    def forget(self, file_id: str) -> bool:
        """Drop a deleted file or folder. True if it was known."""
        known = file_id in self.where or file_id in self.path_of
        self.drop_entry(file_id)
        self.content.pop(file_id, None)
        path = self.path_of.get(file_id)
        if path:
            self.forget_tree(path)
        elif path == "":  # a copy of the hub root deleted: keep the others
            root = self.folders[""]
            if len(root.ids) > 1:
                root.ids.remove(file_id)
                self.path_of.pop(file_id, None)
                root.complete = False
        return known

    def apply(self, change: dict[str, Any]) -> int:
        """One entry of the changes feed; 1 if it changed what this hub knows."""
        file_id = change.get("fileId", "")
        raw = change.get("file")
        if change.get("removed") or raw is None or raw.get("trashed"):
            return int(self.forget(file_id))
        f = DriveFile.of(raw)
        if f.folder and any(f.id in level for level in self.chain):
            return 0  # the hub's own folder or one above it: its metadata is not ours
        if f.folder and self.extends_chain(f):
            return 1
        return int(self.remember(f))

    def extends_chain(self, f: DriveFile) -> bool:
        """Is ``f`` a duplicate of a folder on the hub's own path? Then it is merged."""
        parts = self.folder_path.split("/")
        for k, name in enumerate(parts):
            if f.name == name and f.parent in self.chain[k] and f.id not in self.chain[k + 1]:
                self.chain[k + 1].append(f.id)
                if k + 1 == len(parts):
                    self.add_folder_id("", f)  # another copy of the hub root
                return True
        return False

    def files(self, path: str, name: str) -> list[DriveFile]:
        """The (non-folder) files called ``name`` in the indexed folder ``path``."""
        folder = self.folders.get(path)
        return [] if folder is None else [f for f in folder.children.get(name, [])
                                          if not f.folder]

    def incomplete_all(self) -> None:
        for folder in self.folders.values():
            folder.complete = False
