"""DriveHub: the hub protocol over the Google Drive v3 API.

Layout: the hub's keys are paths under one Drive folder (default
``orch-hub/<project>`` in My Drive). Drive allows duplicate names and has no
compare-and-swap, so, per DESIGN.md:

- every key has one writer; a writer that finds several files of its key's name
  updates the newest and deletes the others (duplicates come from retried creates);
- readers take the newest file of a name;
- downloads are checked against Drive's ``md5Checksum``.

Cost: the hub keeps an index of the folders it has looked at, and follows the
Drive *changes feed* to keep it current. Reads are served from the index (and a
cache of small files keyed by file version), so when nothing changed a daemon
tick costs one request: the ``changes.list`` that says so. A writer's own writes
update the index at once (read-your-writes).

Errors: rate limits (403 ``rateLimitExceeded``/``userRateLimitExceeded``), 429, 5xx
and dropped connections are retried with truncated exponential backoff and
jitter, a bounded number of times; anything else raises HubError naming the call
and the key. Large files go up in resumable chunks (multiples of 256 KiB); after
a broken chunk the session is asked how much it holds and the upload continues
from there (``next_chunk(num_retries>0)`` would stall: see DESIGN.md).

Thread-safe: each thread gets its own HTTP client (httplib2 is not thread-safe);
the index is guarded by a lock. Imports googleapiclient lazily.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import HubError, HubNotFound
from .base import Hub, Watcher, check_key

log = logging.getLogger(__name__)

FOLDER = "application/vnd.google-apps.folder"
FILE_FIELDS = "id,name,mimeType,parents,md5Checksum,size,version,modifiedTime,createdTime,trashed"
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
CHUNK = 256 * 1024
SMALL = 1 << 20  # files up to this size are cached in memory by version


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


@dataclass
class Folder:
    """An indexed hub folder: one or more Drive folders of the same path.

    Two parties that do not yet see each other's new folder (Drive's listings lag)
    each create one: Drive keeps both. Reads merge their children; writes go to the
    oldest (``id``). ``complete``: every child of every one of them is indexed."""

    ids: list[str]
    children: dict[str, list[DriveFile]]
    complete: bool = False

    @property
    def id(self) -> str:
        return self.ids[0]

    def parents_query(self) -> str:
        return "(" + " or ".join(f"'{i}' in parents" for i in self.ids) + ")"


class Retry(Exception):
    """A transient Drive failure, worth another try."""


class DriveHub(Hub):
    """A hub in Drive folder ``folder`` (a path from My Drive's root, or from the
    shared drive ``shared_drive``)."""

    def __init__(
        self,
        folder: str,
        credentials: Any = None,
        api_url: str | None = None,
        service_factory: Callable[[], Any] | None = None,
        *,
        shared_drive: str | None = None,
        staleness: float = 1.0,
        retries: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        chunk_size: int = 32 * CHUNK * 4,
        multipart_limit: int = 5 << 20,
        settle: float = 60.0,
    ) -> None:
        from .drive_api import build_service

        self.folder_path = folder.strip("/")
        if not self.folder_path:
            raise HubError("a Drive hub needs a folder, e.g. drive:orch-hub/myproject")
        self.url = f"drive:{self.folder_path}"
        self._factory = service_factory or (lambda: build_service(credentials, api_url))
        self._local = threading.local()
        self._lock = threading.RLock()
        self.shared_drive = shared_drive
        self.staleness = staleness
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.chunk_size = max(CHUNK, chunk_size // CHUNK * CHUNK)
        self.multipart_limit = multipart_limit
        self._folders: dict[str, Folder] = {}  # indexed folders by path ("" = the hub)
        self._path_of: dict[str, str] = {}  # folder id → path
        self._where: dict[str, str] = {}  # indexed file id → its folder's path
        self._chain: list[list[str]] = []  # ids of each folder on the hub's own path
        self._content: dict[str, tuple[int, bytes]] = {}
        self._token: str | None = None
        self._synced = 0.0
        self.requests = 0
        # The feed's start comes first: whatever happens after it reaches us through
        # the feed. What happened shortly before it may be missing from our first
        # listings too (they lag): for `settle` seconds the hub's path is looked up
        # again and its folders re-listed every few seconds.
        self._token = self._call("changes.getStartPageToken", "", lambda s: s.changes()
                                 .getStartPageToken(**self._drive_args()))["startPageToken"]
        self._root_id = self._resolve_root()
        self._synced = self._rescanned = time.monotonic()
        self._settle_until = self._synced + settle

    def __repr__(self) -> str:  # never shows credentials
        return f"DriveHub({self.folder_path!r})"

    # ---- plumbing -------------------------------------------------------------

    def _svc(self) -> Any:
        svc = getattr(self._local, "svc", None)
        if svc is None:
            svc = self._local.svc = self._factory()
        return svc

    def _drive_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"supportsAllDrives": True}
        if self.shared_drive:
            args["driveId"] = self.shared_drive
        return args

    def _list_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}
        if self.shared_drive:
            args.update(corpora="drive", driveId=self.shared_drive)
        return args

    @staticmethod
    def _transient(exc: BaseException) -> bool:
        from googleapiclient.errors import HttpError

        if isinstance(exc, HttpError):
            status = int(exc.resp.status)
            if status in (429, 500, 502, 503, 504):
                return True
            if status == 403:
                reasons = {d.get("reason") for d in (exc.error_details or [])
                           if isinstance(d, dict)}
                return bool(reasons & RATE_REASONS) or "rateLimitExceeded" in str(exc)
            return False
        import httplib2

        return isinstance(exc, (OSError, httplib2.HttpLib2Error, ConnectionError, TimeoutError))

    def _sleep(self, attempt: int) -> None:
        delay = min(self.max_backoff, self.backoff * (2 ** attempt))
        time.sleep(random.uniform(delay / 2, delay))

    def _call(self, what: str, key: str, make: Callable[[Any], Any],
              missing_ok: bool = False) -> Any:
        """Build a request with ``make(service)`` and execute it, retrying
        transient failures. Returns None for a 404 when ``missing_ok``."""
        from googleapiclient.errors import HttpError

        for attempt in range(self.retries + 1):
            try:
                self.requests += 1
                return make(self._svc()).execute(num_retries=0)
            except Exception as exc:  # noqa: BLE001 - sorted below
                if isinstance(exc, HttpError) and int(exc.resp.status) == 404 and missing_ok:
                    return None
                if self._transient(exc) and attempt < self.retries:
                    log.info("Drive %s %s: %s; retrying", what, key or "", _brief(exc))
                    if not isinstance(exc, HttpError):
                        self._local.svc = None  # a broken connection: fresh client
                    self._sleep(attempt)
                    continue
                raise HubError(f"Drive {what} failed for {key or self.url}: {_brief(exc)}") \
                    from exc
        raise AssertionError("unreachable")

    # ---- the index ----------------------------------------------------------------

    def _rescan(self) -> None:
        """While settling: merge duplicates of the hub's path made by parties that
        started at the same time, and re-list what was listed."""
        chain = self._chain
        for k, name in enumerate(self.folder_path.split("/")):
            found = self._query(f"name = '{_q(name)}' and {Folder(chain[k], {}).parents_query()}"
                                f" and mimeType = '{FOLDER}' and trashed = false", name)
            with self._lock:
                for f in found:
                    self._extends_chain(f)
        with self._lock:
            for folder in self._folders.values():
                folder.complete = False
            self._rescanned = time.monotonic()

    def _resolve_root(self) -> str:
        """Find (or make) the hub's folder. Every level of its path is remembered
        with all its duplicates, so a copy another party made concurrently (not yet
        visible to our listing) is merged in when the changes feed shows it."""
        top = self.shared_drive or self._call("files.get", "root", lambda s: s.files().get(
            fileId="root", fields="id", supportsAllDrives=True))["id"]  # its real id
        level = Folder([top], {})
        self._chain = [list(level.ids)]
        for part in self.folder_path.split("/"):
            found = self._query(f"name = '{_q(part)}' and {level.parents_query()} and "
                                f"mimeType = '{FOLDER}' and trashed = false", part)
            level = Folder(_by_age(found) if found else [self._create_folder(part, level.id).id],
                           {})
            self._chain.append(list(level.ids))
        with self._lock:
            self._folders[""] = level
            for i in level.ids:
                self._path_of[i] = ""
        return level.id

    def _query(self, q: str, key: str) -> list[DriveFile]:
        files: list[DriveFile] = []
        token = None
        while True:
            resp = self._call("files.list", key, lambda s, t=token: s.files().list(  # type: ignore[misc]
                q=q, fields=f"nextPageToken, files({FILE_FIELDS})", pageSize=1000,
                pageToken=t, **self._list_args()))
            files += [DriveFile.of(f) for f in resp.get("files", [])]
            token = resp.get("nextPageToken")
            if not token:
                return files

    def _create_folder(self, name: str, parent: str) -> DriveFile:
        meta = self._call("files.create", name, lambda s: s.files().create(
            body={"name": name, "mimeType": FOLDER, "parents": [parent]},
            fields=FILE_FIELDS, supportsAllDrives=True))
        return DriveFile.of(meta)

    def _entry(self, file_id: str) -> DriveFile | None:
        """The indexed metadata of ``file_id`` (lock held)."""
        folder = self._folders.get(self._where.get(file_id, "\0"))
        if folder is None:
            return None
        return next((x for xs in folder.children.values() for x in xs if x.id == file_id), None)

    def _drop_entry(self, file_id: str) -> None:
        """Remove ``file_id`` from its folder's children (lock held)."""
        folder = self._folders.get(self._where.pop(file_id, "\0"))
        if folder is None:
            return
        for name, files in list(folder.children.items()):
            kept = [x for x in files if x.id != file_id]
            if len(kept) != len(files):
                if kept:
                    folder.children[name] = kept
                else:
                    del folder.children[name]

    def _forget_tree(self, path: str) -> None:
        """Drop the folder at ``path`` and everything indexed under it (lock held)."""
        for p in [p for p in self._folders if p == path or p.startswith(path + "/")]:
            folder = self._folders.pop(p)
            for i in folder.ids:
                self._path_of.pop(i, None)
            for files in folder.children.values():
                for x in files:
                    self._where.pop(x.id, None)
                    self._content.pop(x.id, None)

    def _remember(self, f: DriveFile) -> bool:
        """Index ``f`` (lock held). False if the index already had it as it is."""
        parent_path = self._path_of.get(f.parent or "")
        if self._entry(f.id) == f and self._where.get(f.id) == parent_path:
            return False
        if self._path_of.get(f.id) == "":
            return False  # a copy of the hub root: never moved by us
        self._drop_entry(f.id)
        path = (f"{parent_path}/{f.name}" if parent_path else f.name) \
            if parent_path is not None else None
        if f.folder and f.id in self._path_of and self._path_of[f.id] != path:
            self._forget_tree(self._path_of[f.id])  # moved or renamed
        if parent_path is None:
            return False
        folder = self._folders.get(parent_path)
        if folder is not None:
            folder.children.setdefault(f.name, []).append(f)
            self._where[f.id] = parent_path
        if f.folder and path is not None:
            self._add_folder_id(path, f)
        return True

    def _add_folder_id(self, path: str, f: DriveFile) -> None:
        """Record Drive folder ``f`` as (one of) the folder(s) at ``path`` (lock held).
        A duplicate found later makes the path incomplete: its children get listed."""
        known = self._folders.get(path)
        if known is None:
            self._folders[path] = Folder([f.id], {})
        elif f.id not in known.ids:
            known.ids.append(f.id)
            known.complete = False
        self._path_of[f.id] = path

    def _forget(self, file_id: str) -> bool:
        """Drop a deleted file or folder from the index (lock held)."""
        known = file_id in self._where or file_id in self._path_of
        self._drop_entry(file_id)
        self._content.pop(file_id, None)
        path = self._path_of.get(file_id)
        if path:
            self._forget_tree(path)
        elif path == "":  # a copy of the hub root deleted: keep the others
            root = self._folders[""]
            if len(root.ids) > 1:
                root.ids.remove(file_id)
                self._path_of.pop(file_id, None)
                root.complete = False
        return known

    def sync(self) -> int:
        """Apply the changes feed to the index. Returns how many changes concern this
        hub's folders. Costs one request when nothing changed."""
        changed = 0
        token = self._token
        while token:
            resp = self._call("changes.list", "", lambda s, t=token: s.changes().list(  # type: ignore[misc]
                pageToken=t, pageSize=1000, includeRemoved=True, spaces="drive",
                fields=f"nextPageToken, newStartPageToken, changes(fileId, removed, "
                       f"file({FILE_FIELDS}))", **self._list_args()))
            with self._lock:
                for change in resp.get("changes", []):
                    changed += self._apply(change)
            if resp.get("nextPageToken"):
                token = resp["nextPageToken"]
                continue
            token = resp.get("newStartPageToken") or token
            break
        with self._lock:
            self._token = token
            self._synced = time.monotonic()
        return changed

    def _apply(self, change: dict[str, Any]) -> int:
        """One entry of the changes feed; 1 if it changed what this hub knows."""
        file_id = change.get("fileId", "")
        raw = change.get("file")
        if change.get("removed") or raw is None or raw.get("trashed"):
            return int(self._forget(file_id))
        f = DriveFile.of(raw)
        if f.folder and any(f.id in level for level in self._chain):
            return 0  # the hub's own folder or one above it: its metadata is not ours
        if f.folder and self._extends_chain(f):
            return 1
        return int(self._remember(f))

    def _extends_chain(self, f: DriveFile) -> bool:
        """Is ``f`` a duplicate of a folder on the hub's own path? (lock held)"""
        parts = self.folder_path.split("/")
        for k, name in enumerate(parts):
            if f.name == name and f.parent in self._chain[k] and f.id not in self._chain[k + 1]:
                self._chain[k + 1].append(f.id)
                if k + 1 == len(parts):
                    self._add_folder_id("", f)  # another copy of the hub root
                return True
        return False

    def _fresh(self) -> None:
        now = time.monotonic()
        if now - self._synced >= self.staleness:
            self.sync()
            if now < self._settle_until and now - self._rescanned >= 3 * self.staleness:
                self._rescan()

    def _folder(self, path: str, create: bool = False) -> Folder | None:
        """The indexed folder at ``path`` ("" is the hub root), looked up (and with
        ``create`` made) on Drive if not indexed yet."""
        with self._lock:
            if path in self._folders or path == "":
                return self._folders[path]  # the root is always indexed
            parent_path, _, name = path.rpartition("/")
            parent = self._folder(parent_path, create)
            if parent is None:
                return None
            candidates = [f for f in parent.children.get(name, []) if f.folder]
            if not candidates and not parent.complete:
                candidates = self._query(
                    f"name = '{_q(name)}' and {parent.parents_query()} and "
                    f"mimeType = '{FOLDER}' and trashed = false", path)
            if candidates:
                folder = Folder(_by_age(candidates), {})
            elif create:
                parent = self._listed(parent_path) or parent  # to see what is in the way
                if any(not f.folder for f in parent.children.get(name, [])):
                    raise HubError(f"cannot make folder {path} on {self.url}: a file has its name")
                made = self._create_folder(name, parent.id)
                parent.children.setdefault(name, []).append(made)
                self._where[made.id] = parent_path
                folder = Folder([made.id], {}, complete=True)  # new: nothing in it yet
            else:
                return None
            self._folders[path] = folder
            for i in folder.ids:
                self._path_of[i] = path
            return folder

    def _listed(self, path: str, create: bool = False) -> Folder | None:
        """The folder at ``path`` with all its children indexed."""
        folder = self._folder(path, create)
        if folder is None or folder.complete:
            return folder
        files = self._query(f"{folder.parents_query()} and trashed = false", path)
        with self._lock:
            # Merge, never replace: a listing may lag behind what this hub wrote or
            # learned from the feed (deletions reach the index through the feed).
            for f in files:
                if self._entry(f.id) is not None:
                    self._drop_entry(f.id)
                folder.children.setdefault(f.name, []).append(f)
                self._where[f.id] = path
                if f.folder:
                    self._add_folder_id(f"{path}/{f.name}" if path else f.name, f)
            folder.complete = True
        return folder

    def _files(self, key: str) -> list[DriveFile]:
        parent_path, _, name = check_key(key).rpartition("/")
        self._fresh()
        folder = self._listed(parent_path)
        if folder is None:
            return []
        with self._lock:
            return [f for f in folder.children.get(name, []) if not f.folder]

    # ---- the Hub interface ----------------------------------------------------------

    @contextlib.contextmanager
    def _about(self, key: str, doing: str) -> Iterator[None]:
        """Name the key in errors raised while working on it."""
        try:
            yield
        except HubError as exc:
            if key and key not in str(exc):
                raise type(exc)(f"{exc} ({doing} {key})") from exc
            raise

    def _exists(self, key: str) -> bool:
        if self._files(key):
            return True
        self._fresh()
        return self._folder(check_key(key)) is not None

    def _list(self, prefix: str) -> list[str]:
        self._fresh()
        folder = self._listed(check_key(prefix) if prefix else "")
        if folder is None:
            return []
        with self._lock:
            return sorted(n for n, fs in folder.children.items() if fs and not n.startswith("."))

    def _get_bytes(self, key: str) -> bytes:
        """The newest file of ``key``, checked against Drive's md5Checksum. Small files
        are served from a cache while their Drive version is unchanged.

        A download that does not match the indexed md5 is checked against the file's
        metadata read again: if they match, a newer complete version was read (the
        writer replaced the file meanwhile) and it is returned."""
        files = self._files(key)
        if not files:
            raise HubNotFound(f"{key} not in hub {self.url}")
        f: DriveFile | None = newest(files)
        for _ in range(self.retries + 1):
            assert f is not None
            with self._lock:
                cached = self._content.get(f.id)
            if cached and cached[0] == f.version:
                return cached[1]
            data = self._call("files.get_media", key, lambda s, i=f.id: s.files().get_media(  # type: ignore[misc]
                fileId=i, supportsAllDrives=True), missing_ok=True)
            digest = hashlib.md5(data).hexdigest() if data is not None else None
            if data is not None and f.md5 in (None, digest):
                return self._keep(f, data)
            now = self._refresh(key, f.id)
            if now is None:  # deleted meanwhile: an older duplicate may remain
                rest = self._files(key)
                if not rest:
                    raise HubNotFound(f"{key} not in hub {self.url}")
                f = newest(rest)
                continue
            if data is not None and now.md5 == digest:
                return self._keep(now, data)
            f = now
        raise HubError(f"Drive download of {key} does not match its md5Checksum")

    def _keep(self, f: DriveFile, data: bytes) -> bytes:
        if len(data) <= SMALL:
            with self._lock:
                self._content[f.id] = (f.version, data)
        return data

    def _refresh(self, key: str, file_id: str) -> DriveFile | None:
        """Re-read one file's metadata into the index (None if it is gone)."""
        raw = self._call("files.get", key, lambda s: s.files().get(
            fileId=file_id, fields=FILE_FIELDS, supportsAllDrives=True), missing_ok=True)
        with self._lock:
            if raw is None or raw.get("trashed"):
                self._forget(file_id)
                return None
            f = DriveFile.of(raw)
            self._remember(f)
            return f

    def _get_file(self, key: str, dest: Path) -> None:
        files = self._files(key)
        if not files:
            raise HubNotFound(f"{key} not in hub {self.url}")
        f = newest(files)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            for _ in range(3):
                md5 = self._download(key, f.id, tmp)
                if f.md5 is None or md5 == f.md5:
                    os.replace(tmp, dest)
                    return
                again = self._refresh(key, f.id)  # replaced while we read it
                if again is None:
                    raise HubNotFound(f"{key} not in hub {self.url}")
                f = again
            raise HubError(f"Drive download of {key} does not match its md5Checksum")
        finally:
            tmp.unlink(missing_ok=True)

    def _download(self, key: str, file_id: str, tmp: Path) -> str:
        """Stream a file to ``tmp`` in chunks, resuming after transient errors."""
        from googleapiclient.http import MediaIoBaseDownload

        with open(tmp, "wb") as out:
            request = self._svc().files().get_media(fileId=file_id, supportsAllDrives=True)
            down = MediaIoBaseDownload(out, request, chunksize=self.chunk_size)
            done, failures = False, 0
            while not done:
                try:
                    self.requests += 1
                    _, done = down.next_chunk(num_retries=0)
                except Exception as exc:  # noqa: BLE001
                    if not self._transient(exc) or failures >= self.retries:
                        raise HubError(f"Drive download failed for {key}: {_brief(exc)}") \
                            from exc
                    self._sleep(failures)
                    failures += 1
        h = hashlib.md5()
        with open(tmp, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def _put_bytes(self, key: str, data: bytes) -> None:
        from googleapiclient.http import MediaIoBaseUpload

        self._put(key, lambda resumable: MediaIoBaseUpload(
            io.BytesIO(data), "application/octet-stream", resumable=resumable,
            chunksize=self.chunk_size), len(data), data if len(data) <= SMALL else None)

    def _put_file(self, key: str, src: Path) -> None:
        from googleapiclient.http import MediaFileUpload

        size = src.stat().st_size
        self._put(key, lambda resumable: MediaFileUpload(
            str(src), "application/octet-stream", resumable=resumable,
            chunksize=self.chunk_size), size, None)

    def _put(self, key: str, media: Callable[[bool], Any], size: int,
             small: bytes | None) -> None:
        parent_path, _, name = check_key(key).rpartition("/")
        self._fresh()
        folder = self._listed(parent_path, create=True)
        assert folder is not None
        with self._lock:
            existing = [f for f in folder.children.get(name, []) if not f.folder]
        resumable = size > self.multipart_limit
        if existing:
            keep = newest(existing)
            meta = self._upload(key, lambda s, m: s.files().update(
                fileId=keep.id, media_body=m, fields=FILE_FIELDS, supportsAllDrives=True),
                media, resumable)
            for stale in existing:  # duplicates of a key only its writer can clean
                if stale.id != keep.id:
                    self._call("files.delete", key, lambda s, i=stale.id: s.files().delete(  # type: ignore[misc]
                        fileId=i, supportsAllDrives=True), missing_ok=True)
                    with self._lock:
                        self._forget(stale.id)
        else:
            meta = self._upload(key, lambda s, m: s.files().create(
                body={"name": name, "parents": [folder.id]}, media_body=m, fields=FILE_FIELDS,
                supportsAllDrives=True), media, resumable)
        f = DriveFile.of(meta)
        with self._lock:
            self._remember(f)
            if small is not None:
                self._content[f.id] = (f.version, small)

    def _upload(self, key: str, make: Callable[[Any, Any], Any],
                media: Callable[[bool], Any], resumable: bool) -> dict[str, Any]:
        if not resumable:
            return self._call("upload", key, lambda s: make(s, media(False)))  # type: ignore[no-any-return]
        for attempt in range(self.retries + 1):
            try:
                return self._resumable(key, make(self._svc(), media(True)))
            except Retry as exc:
                if attempt >= self.retries:
                    raise HubError(f"Drive upload failed for {key}: {exc}") from exc
                self._sleep(attempt)
        raise AssertionError("unreachable")

    def _resumable(self, key: str, request: Any) -> dict[str, Any]:
        """Send ``request`` chunk by chunk; after a transient error, ask the session
        how much it has and continue from there."""
        failures = 0
        while True:
            try:
                self.requests += 1
                _, response = request.next_chunk(num_retries=0)
            except Exception as exc:  # noqa: BLE001
                if not self._transient(exc):
                    raise HubError(f"Drive upload failed for {key}: {_brief(exc)}") from exc
                if failures >= self.retries:
                    raise HubError(f"Drive upload of {key} kept failing: {_brief(exc)}") \
                        from exc
                failures += 1
                self._sleep(failures - 1)
                if request.resumable_uri is None:
                    raise Retry(_brief(exc)) from exc  # the session never started
                response = self._resume(key, request)
            if response is not None:
                return response  # type: ignore[no-any-return]

    def _resume(self, key: str, request: Any) -> dict[str, Any] | None:
        """Ask an upload session what it holds (``Content-Range: bytes */TOTAL``)."""
        import json

        total = request.resumable.size()
        http = request.http
        self.requests += 1
        try:
            resp, body = http.request(request.resumable_uri, "PUT", body=b"",
                                      headers={"Content-Range": f"bytes */{total}",
                                               "Content-Length": "0"})
        except Exception as exc:  # noqa: BLE001
            if self._transient(exc):
                self._local.svc = None
                return None  # next_chunk will try again (and come back here on failure)
            raise
        status = int(resp.status)
        if status in (200, 201):
            return json.loads(body)  # type: ignore[no-any-return]
        if status == 308:
            got = resp.get("range")
            request.resumable_progress = int(got.rsplit("-", 1)[1]) + 1 if got else 0
            request._in_error_state = False  # we asked: do not let the client ask again
            return None
        if status == 404:
            raise Retry("upload session expired")
        if status in (429, 500, 502, 503, 504):
            return None
        raise HubError(f"Drive upload of {key}: session answered HTTP {status}")

    def _delete(self, key: str) -> None:
        check_key(key)
        targets = self._files(key)
        if not targets:
            folder = self._folder(key)
            if folder is None:
                return
            targets = [DriveFile(i, key.rpartition("/")[2], True, None, None, 0, 0, "", "")
                       for i in folder.ids]
        for f in targets:
            self._call("files.delete", key, lambda s, i=f.id: s.files().delete(  # type: ignore[misc]
                fileId=i, supportsAllDrives=True), missing_ok=True)
            with self._lock:
                self._forget(f.id)

    def exists(self, key: str) -> bool:
        with self._about(key, "checking"):
            return self._exists(key)

    def list(self, prefix: str) -> list[str]:
        with self._about(prefix, "listing"):
            return self._list(prefix)

    def get_bytes(self, key: str) -> bytes:
        with self._about(key, "reading"):
            return self._get_bytes(key)

    def get_file(self, key: str, dest: Path) -> None:
        with self._about(key, "reading"):
            self._get_file(key, dest)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._about(key, "writing"):
            self._put_bytes(key, data)

    def put_file(self, key: str, src: Path) -> None:
        with self._about(key, "writing"):
            self._put_file(key, src)

    def delete(self, key: str) -> None:
        with self._about(key, "deleting"):
            self._delete(key)

    def file_id(self, key: str) -> str:
        """The Drive id of the newest file of ``key`` (for links such as Colab's)."""
        files = self._files(key)
        if not files:
            raise HubNotFound(f"{key} not in hub {self.url}")
        return newest(files).id

    def watch(self) -> Watcher:
        return DriveWatcher(self)


class DriveWatcher(Watcher):
    """Polls the changes feed; wakes when something in the hub changed."""

    def __init__(self, hub: DriveHub) -> None:
        super().__init__()
        self.hub = hub

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if super().wait(0):
                return True
            try:
                if self.hub.sync():
                    return True
            except HubError as exc:
                log.warning("%s", exc)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if super().wait(min(left, self.hub.staleness)):
                return True


def _by_age(folders: list[DriveFile]) -> list[str]:
    """Ids of duplicate folders, oldest first (the one writers use)."""
    return [f.id for f in sorted(folders, key=lambda f: (f.created, f.id))]


def _q(text: str) -> str:
    """Escape a string literal for a Drive query."""
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _brief(exc: BaseException) -> str:
    from googleapiclient.errors import HttpError

    if isinstance(exc, HttpError):
        reasons = ",".join(str(d.get("reason")) for d in (exc.error_details or [])
                           if isinstance(d, dict))
        return f"HTTP {exc.resp.status} {reasons} {exc._get_reason()}".strip()
    return f"{type(exc).__name__}: {exc}"


