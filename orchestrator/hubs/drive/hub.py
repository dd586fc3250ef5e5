"""DriveHub: the hub protocol over the Google Drive v3 API.

Layout: the hub's keys are paths under one Drive folder (default
``orch-hub/<project>`` in My Drive). Drive allows duplicate names and has no
compare-and-swap, so, per the protocol:

- every key has one writer; a writer that finds several files of its key's name
  updates the newest and deletes the others (duplicates come from retried creates);
- readers take the newest file of a name;
- downloads are checked against Drive's ``md5Checksum``.

Cost: the hub keeps an index of the folders it has looked at
(:mod:`.index`) and follows the Drive *changes feed* to keep it current. Reads
are served from the index (and a cache of small files keyed by file version), so
when nothing changed a daemon tick costs one request: the ``changes.list`` that
says so. A writer's own writes update the index at once (read-your-writes).
Requests, retries and chunked transfers are :class:`.api.DriveClient`'s.

Thread-safe: the index is guarded by its lock; each thread has its own client.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...atomic import temp_path
from ...errors import HubError, HubNotFound
from ..base import Hub, PollingWatcher, Watcher, check_key
from .api import CHUNK, DriveClient
from .index import FILE_FIELDS, FOLDER, DriveFile, DriveIndex, Folder, by_age, newest, quote
from .tidy import create_folder_once, prune_revisions, tidy_hub

log = logging.getLogger(__name__)

SMALL = 1 << 20  # files up to this size are cached in memory by version
# A write accepts a view this many times ``staleness`` old: it only needs the file
# to update (a key has one writer), and a heartbeat then costs one request.
WRITE_SLACK = 5.0


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
        prune_over: int = SMALL,
    ) -> None:
        """``settle``: how long after start the hub's path is looked up again (listings
        lag), and how old a duplicate folder must be before it is merged away.
        ``prune_over``: files of at least this size (and every checkpoint) keep one Drive
        revision."""
        from .api import build_service

        self.folder_path = folder.strip("/")
        if not self.folder_path:
            raise HubError("a Drive hub needs a folder, e.g. drive:orch-hub/myproject")
        self.url = f"drive:{self.folder_path}"
        self.client = DriveClient(service_factory or (lambda: build_service(credentials, api_url)),
                                  self.url, shared_drive=shared_drive, retries=retries,
                                  backoff=backoff, max_backoff=max_backoff, chunk_size=chunk_size)
        self.index = DriveIndex(self.folder_path)
        self.shared_drive = shared_drive
        self.staleness = staleness
        self.multipart_limit = multipart_limit
        self.settle = settle
        self.prune_over = prune_over
        # The feed's start comes first: whatever happens after it reaches us through
        # the feed. What happened shortly before it may be missing from our first
        # listings too (they lag): for `settle` seconds the hub's path is looked up
        # again and its folders re-listed, after 3 and 15 times `staleness` (then 63,
        # ...: an idle worker's requests stay few).
        self._token: str | None = self.client.call(
            "changes.getStartPageToken", "", lambda s: s.changes().getStartPageToken(
                **self.client.drive_args()))["startPageToken"]
        self.root_id = self._resolve_root()
        self._synced = self._rescanned = time.monotonic()
        self._rescan_every = 3 * staleness  # doubles after each rescan: lag is brief
        self._settle_until = self._synced + settle
        self._tidied = 0.0
        self.tidy()

    def __repr__(self) -> str:  # never shows credentials
        return f"DriveHub({self.folder_path!r})"

    @property
    def chunk_size(self) -> int:
        return self.client.chunk_size

    @property
    def requests(self) -> int:
        """How many Drive requests this hub has sent (for benchmarks)."""
        return self.client.requests

    # ---- the index, kept current --------------------------------------------------

    def _folders_named(self, name: str, parent: Folder) -> list[DriveFile]:
        return self.client.query(f"name = '{quote(name)}' and {parent.parents_query()} and "
                                 f"mimeType = '{FOLDER}' and trashed = false", name)

    def _resolve_root(self) -> str:
        """Find (or make) the hub's folder. Every level of its path is remembered
        with all its duplicates, so a copy another party made concurrently (not yet
        visible to our listing) is merged in when the changes feed shows it."""
        top = self.shared_drive or self.client.call("files.get", "root", lambda s: s.files().get(
            fileId="root", fields="id", supportsAllDrives=True))["id"]  # its real id
        level = Folder([top])
        chain = [list(level.ids)]
        for part in self.folder_path.split("/"):
            found = self._folders_named(part, level) or \
                create_folder_once(self.client, part, level.ids)[0]
            with self.index.lock:
                self.index.note(found)
            level = Folder(by_age(found))
            chain.append(list(level.ids))
        with self.index.lock:
            self.index.chain = chain
            self.index.set_root(level)
        return level.id

    def _rescan(self) -> None:
        """While settling: merge duplicates of the hub's path made by parties that
        started at the same time, and re-list what was listed."""
        for k, name in enumerate(self.folder_path.split("/")):
            found = self._folders_named(name, Folder(self.index.chain[k]))
            with self.index.lock:
                for f in found:
                    self.index.extends_chain(f)
        with self.index.lock:
            self.index.incomplete_all()
            self._rescanned = time.monotonic()
            self._rescan_every *= 4

    def sync(self) -> int:
        """Apply the changes feed to the index. Returns how many changes concern this
        hub's folders. Costs one request when nothing changed."""
        changed = 0
        token = self._token
        while token:
            resp = self.client.call("changes.list", "", lambda s, t=token: s.changes().list(  # type: ignore[misc]
                pageToken=t, pageSize=1000, includeRemoved=True, spaces="drive",
                fields=f"nextPageToken, newStartPageToken, changes(fileId, removed, "
                       f"file({FILE_FIELDS}))", **self.client.changes_args()))
            with self.index.lock:
                for change in resp.get("changes", []):
                    changed += self.index.apply(change)
            if resp.get("nextPageToken"):
                token = resp["nextPageToken"]
                continue
            token = resp.get("newStartPageToken") or token
            break
        with self.index.lock:
            self._token = token
            self._synced = time.monotonic()
        return changed

    def _fresh(self, slack: float = 1.0) -> None:
        """Sync if the view is ``staleness`` (times ``slack``) old."""
        now = time.monotonic()
        if now - self._synced >= self.staleness * slack:
            self.sync()
            if now < self._settle_until and now - self._rescanned >= self._rescan_every:
                self._rescan()
            if now - self._tidied >= self.settle:
                self.tidy()

    def tidy(self) -> int:
        """Merge the duplicate folders this hub knows of into the oldest of each path,
        once older than ``settle`` (see :func:`.tidy.tidy_hub`). Returns how many."""
        self._tidied = time.monotonic()
        return tidy_hub(self)

    def _folder(self, path: str, create: bool = False) -> Folder | None:
        """The indexed folder at ``path`` ("" is the hub root), looked up (and with
        ``create`` made) on Drive if not indexed yet."""
        index = self.index
        with index.lock:
            if path in index.folders or path == "":
                return index.folders[path]  # the root is always indexed
            parent_path, _, name = path.rpartition("/")
            parent = self._folder(parent_path, create)
            if parent is None:
                return None
            candidates = [f for f in parent.children.get(name, []) if f.folder]
            if not candidates and not parent.complete:  # listed once, not asked each time
                parent = self._listed(parent_path) or parent
                candidates = [f for f in parent.children.get(name, []) if f.folder]
            if candidates:
                folder = Folder(by_age(candidates))
            elif create:
                parent = self._listed(parent_path) or parent  # to see what is in the way
                if any(not f.folder for f in parent.children.get(name, [])):
                    raise HubError(f"cannot make folder {path} on {self.url}: a file has its name")
                found, made = create_folder_once(self.client, name, parent.ids)
                for f in found:
                    parent.children.setdefault(name, []).append(f)
                    index.where[f.id] = parent_path
                # ours alone is new: nothing in it yet
                folder = Folder(by_age(found), complete=[f.id for f in found] == [made.id])
            else:
                return None
            index.note(candidates)
            index.add_folder(path, folder)
            return folder

    def _listed(self, path: str, create: bool = False) -> Folder | None:
        """The folder at ``path`` with all its children indexed."""
        folder = self._folder(path, create)
        if folder is None or folder.complete:
            return folder
        files = self.client.query(f"{folder.parents_query()} and trashed = false", path)
        with self.index.lock:
            # Merge, never replace: a listing may lag behind what this hub wrote or
            # learned from the feed (deletions reach the index through the feed).
            for f in files:
                self.index.add_child(path, f)
            folder.complete = True
        return folder

    def _files(self, key: str) -> list[DriveFile]:
        parent_path, _, name = check_key(key).rpartition("/")
        self._fresh()
        if self._listed(parent_path) is None:
            return []
        with self.index.lock:
            return self.index.files(parent_path, name)

    def _refresh(self, key: str, file_id: str) -> DriveFile | None:
        """Re-read one file's metadata into the index (None if it is gone)."""
        raw = self.client.metadata(key, file_id)
        with self.index.lock:
            if raw is None or raw.get("trashed"):
                self.index.forget(file_id)
                return None
            f = DriveFile.of(raw)
            self.index.remember(f)
            return f

    def _keep(self, f: DriveFile, data: bytes) -> bytes:
        if len(data) <= SMALL:
            with self.index.lock:
                self.index.content[f.id] = (f.version, data)
        return data

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

    def exists(self, key: str) -> bool:
        with self._about(key, "checking"):
            if self._files(key):
                return True
            self._fresh()
            return self._folder(check_key(key)) is not None

    def list(self, prefix: str) -> list[str]:
        with self._about(prefix, "listing"):
            self._fresh()
            folder = self._listed(check_key(prefix) if prefix else "")
            if folder is None:
                return []
            with self.index.lock:
                return sorted(n for n, fs in folder.children.items()
                              if fs and not n.startswith("."))

    def get_bytes(self, key: str) -> bytes:
        """The newest file of ``key``, checked against Drive's md5Checksum. Small files
        are served from a cache while their Drive version is unchanged.

        A download that does not match the indexed md5 is checked against the file's
        metadata read again: if they match, a newer complete version was read (the
        writer replaced the file meanwhile) and it is returned."""
        with self._about(key, "reading"):
            files = self._files(key)
            if not files:
                raise HubNotFound(f"{key} not in hub {self.url}")
            f: DriveFile | None = newest(files)
            for _ in range(self.client.retries + 1):
                assert f is not None
                with self.index.lock:
                    cached = self.index.content.get(f.id)
                if cached and cached[0] == f.version:
                    return cached[1]
                data = self.client.media(key, f.id)
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

    def get_file(self, key: str, dest: Path) -> None:
        with self._about(key, "reading"):
            files = self._files(key)
            if not files:
                raise HubNotFound(f"{key} not in hub {self.url}")
            f = newest(files)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = temp_path(dest)
            try:
                for _ in range(3):
                    md5 = self.client.download(key, f.id, tmp)
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

    def put_bytes(self, key: str, data: bytes) -> None:
        from googleapiclient.http import MediaIoBaseUpload

        with self._about(key, "writing"):
            self._put(key, lambda resumable: MediaIoBaseUpload(
                io.BytesIO(data), "application/octet-stream", resumable=resumable,
                chunksize=self.chunk_size), len(data), data if len(data) <= SMALL else None)

    def put_file(self, key: str, src: Path) -> None:
        from googleapiclient.http import MediaFileUpload

        with self._about(key, "writing"):
            self._put(key, lambda resumable: MediaFileUpload(
                str(src), "application/octet-stream", resumable=resumable,
                chunksize=self.chunk_size), src.stat().st_size, None)

    def _put(self, key: str, media: Callable[[bool], Any], size: int,
             small: bytes | None) -> None:
        parent_path, _, name = check_key(key).rpartition("/")
        self._fresh(slack=WRITE_SLACK)
        folder = self._listed(parent_path, create=True)
        assert folder is not None
        with self.index.lock:
            existing = self.index.files(parent_path, name)
        resumable = size > self.multipart_limit
        if existing:
            keep = newest(existing)
            meta = self.client.upload(key, lambda s, m: s.files().update(
                fileId=keep.id, media_body=m, fields=FILE_FIELDS, supportsAllDrives=True,
                keepRevisionForever=False), media, resumable)
            # one revision kept: for large files (the old content counts against the
            # quota) and for every checkpoint (rewritten each epoch: runs/JOB/ckpt/N.tar)
            if size >= self.prune_over or "/ckpt/" in key:
                try:
                    prune_revisions(self.client, key, keep.id)
                except HubError as exc:
                    log.warning("could not delete old revisions of %s: %s", key, exc)
            for stale in existing:  # duplicates of a key only its writer can clean
                if stale.id != keep.id:
                    self.client.delete(key, stale.id)
                    with self.index.lock:
                        self.index.forget(stale.id)
        else:
            meta = self.client.upload(key, lambda s, m: s.files().create(
                body={"name": name, "parents": [folder.id]}, media_body=m, fields=FILE_FIELDS,
                supportsAllDrives=True), media, resumable)
        f = DriveFile.of(meta)
        with self.index.lock:
            self.index.remember(f)
            if small is not None:
                self.index.content[f.id] = (f.version, small)

    def delete(self, key: str) -> None:
        with self._about(key, "deleting"):
            check_key(key)
            targets = self._files(key)
            if not targets:
                folder = self._folder(key)
                if folder is None:
                    return
                targets = [DriveFile(i, key.rpartition("/")[2], True, None, None, 0, 0, "", "")
                           for i in folder.ids]
            for f in targets:
                self.client.delete(key, f.id)
                with self.index.lock:
                    self.index.forget(f.id)

    def account(self) -> str | None:
        """The signed-in user's email (one ``about.get``); None if Drive does not say."""
        try:
            about = self.client.call("about.get", "", lambda s: s.about().get(
                fields="user(emailAddress)"))
        except HubError as exc:
            log.info("cannot tell whose Drive this is: %s", exc)
            return None
        return (about.get("user") or {}).get("emailAddress") or None

    def file_id(self, key: str) -> str:
        """The Drive id of the newest file of ``key`` (for links such as Colab's)."""
        files = self._files(key)
        if not files:
            raise HubNotFound(f"{key} not in hub {self.url}")
        return newest(files).id

    def watch(self) -> Watcher:
        """Polls the changes feed (every ``staleness`` s); wakes when something in the
        hub changed."""
        return PollingWatcher(lambda: self.sync() > 0, self.staleness)
