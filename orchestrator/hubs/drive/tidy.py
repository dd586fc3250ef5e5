"""Drive housekeeping: one folder per path, one revision per file.

Drive allows duplicate names and has no atomic create-if-absent, so two parties
that start at once (two workers; the daemon and ``orch colab``) may each create
the hub's folder, and a create whose answer was lost and was retried leaves a
second folder. The rules, which every party follows and so converges on:

- **The oldest wins**: of several folders of one name in one parent, the one with
  the earliest ``createdTime`` (then the smallest id) is *the* folder; everyone
  writes there (:func:`..index.by_age`).
- **A creator checks**: right after creating a folder a party lists that name
  (:func:`create_folder_once`); if an older one exists it deletes its own (still
  empty, nobody else has written there: they all write to the oldest) and uses
  the older.
- **Duplicates that stayed are merged** (:func:`merge_folders`): whatever a
  duplicate holds is moved into the winner (folders of the same name merged in
  turn), then the empty duplicate is trashed (not deleted: a write that raced the
  move is recoverable from the trash). Only duplicates older than the hub's
  settle time are merged, so no party that has not yet seen the winner is still
  writing there.

Revisions: every media update of a file keeps the old content as a revision that
counts against the owner's storage until Drive purges it (after 30 days or 100
revisions). Checkpoints rewritten every epoch would pile up; the hub therefore
updates with ``keepRevisionForever=false`` and, for large files, deletes every
revision but the head (:func:`prune_revisions`). Updating in place (rather than
writing a new file and deleting the old) keeps the file id (links stay valid) and
a reader never finds the key missing.

Every function here is idempotent: running it twice, or by two parties at once,
leaves the same result (404s of something already moved or gone are ignored).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING

from ...errors import HubError
from .api import DriveClient
from .index import FOLDER, DriveFile, quote

if TYPE_CHECKING:
    from .hub import DriveHub

log = logging.getLogger(__name__)


def age_key(f: DriveFile) -> tuple[str, str]:
    return (f.created, f.id)


def folders_named(client: DriveClient, name: str, parents: list[str]) -> list[DriveFile]:
    """The folders called ``name`` in any of ``parents``, oldest first."""
    within = " or ".join(f"'{p}' in parents" for p in parents)
    found = client.query(f"name = '{quote(name)}' and ({within}) and mimeType = '{FOLDER}' "
                         f"and trashed = false", name)
    return sorted(found, key=age_key)


def create_folder_once(client: DriveClient, name: str,
                       parents: list[str]) -> tuple[list[DriveFile], DriveFile]:
    """Create folder ``name`` in ``parents[0]`` and settle on one. Returns the folders
    of that name, oldest (the one to use) first, and the one made here. If an older
    one than ours shows up, ours (new and empty) is deleted again. A listing that lags
    may not show a concurrent copy yet: then both remain, and :func:`merge_folders`
    merges them later."""
    made = client.create_folder(name, parents[0])
    found = folders_named(client, name, parents)
    if made.id not in {f.id for f in found}:
        found = sorted([*found, made], key=age_key)  # our own create, not listed yet
    if found[0].id != made.id:
        log.info("Drive folder %s was created meanwhile by another party (or by a retried "
                 "request); using the older one", name)
        client.delete(name, made.id)
        found = [f for f in found if f.id != made.id]
    return found, made


def merge_folders(client: DriveClient, path: str, winner: str, loser: str) -> bool:
    """Move everything in folder ``loser`` into ``winner`` (a subfolder whose name the
    winner also has is merged into it), then trash ``loser``, if it is empty by then.
    A child another party moved meanwhile is skipped. True if ``loser`` was trashed."""
    children = client.query(f"'{loser}' in parents and trashed = false", path)
    theirs = {f.name: f for f in sorted(client.query(
        f"'{winner}' in parents and mimeType = '{FOLDER}' and trashed = false", path),
        key=age_key, reverse=True)}  # the oldest of each name last, so it wins
    for child in children:
        sub = f"{path}/{child.name}" if path else child.name
        into = theirs.get(child.name) if child.folder else None
        try:
            if into is not None and into.id != child.id:
                merge_folders(client, sub, into.id, child.id)
                continue
            client.call("files.update", sub, lambda s, c=child: s.files().update(  # type: ignore[misc]
                fileId=c.id, addParents=winner, removeParents=loser, fields="id",
                supportsAllDrives=True), missing_ok=True)
        except HubError as exc:  # e.g. moved elsewhere by another party meanwhile
            log.info("merging %s: %s", sub, exc)
    left = client.query(f"'{loser}' in parents and trashed = false", path)
    if left:
        log.info("duplicate Drive folder %s not empty yet (%d left); merged later",
                 path or "(hub)", len(left))
        return False
    client.call("files.update", path, lambda s: s.files().update(
        fileId=loser, body={"trashed": True}, fields="id", supportsAllDrives=True),
        missing_ok=True)
    log.info("merged a duplicate Drive folder %s into the oldest one (%d items moved); "
             "the duplicate is in the trash", path or "(hub)", len(children))
    return True


def old_enough(created: str, now: float, settle: float) -> bool:
    """Is a ``createdTime`` more than ``settle`` seconds before ``now`` (epoch s)?"""
    try:
        born = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return False
    return now - born > settle


def prune_revisions(client: DriveClient, key: str, file_id: str) -> int:
    """Delete every revision of a file but the head. Returns how many were deleted."""
    resp = client.call("revisions.list", key, lambda s: s.revisions().list(
        fileId=file_id, fields="revisions(id)", pageSize=1000), missing_ok=True)
    revs = [r["id"] for r in (resp or {}).get("revisions", [])]
    for rev in revs[:-1]:
        client.call("revisions.delete", key, lambda s, r=rev: s.revisions().delete(  # type: ignore[misc]
            fileId=file_id, revisionId=r), missing_ok=True)
    return max(0, len(revs) - 1)


def tidy_hub(hub: DriveHub) -> int:
    """Merge the duplicate folders ``hub`` knows of (made by parties that started
    together, or by retried creates) into the oldest of each path, once they are older
    than ``hub.settle`` (every party has seen the oldest by then and writes there).
    Costs no request while there are none; a failure is logged, never raised (the
    next tidy tries again). Returns how many were merged."""
    with hub.index.lock:
        dups = [p for p, f in hub.index.folders.items() if len(f.ids) > 1]
    merged = 0
    for path in dups:
        try:
            merged += _tidy_path(hub, path)
        except HubError as exc:
            log.warning("could not merge duplicate Drive folders of %s yet: %s",
                        path or hub.folder_path, exc)
    return merged


def _tidy_path(hub: DriveHub, path: str) -> int:
    index = hub.index
    parent_path, _, name = path.rpartition("/")
    with index.lock:
        if path == "":
            name, parents = hub.folder_path.rpartition("/")[2], index.chain[-2]
        elif parent_path in index.folders:
            parents = list(index.folders[parent_path].ids)
        else:
            return 0
    found = folders_named(hub.client, name, parents)  # all of them, oldest first
    losers = [f for f in found[1:] if old_enough(f.created, time.time(), hub.settle)]
    for loser in losers:
        if merge_folders(hub.client, path, found[0].id, loser.id):
            with index.lock:
                if path == "":
                    index.forget(loser.id)
                else:
                    index.drop_entry(loser.id)
                    index.forget_tree(path)  # looked up again when next used
    live = {f.id for f in found}
    with index.lock:
        index.note(found)
        folder = index.folders.get(path)
        for gone in [i for i in (folder.ids if folder else []) if i not in live and
                     old_enough(index.born.get(i, ""), time.time(), hub.settle)]:
            index.forget(gone)  # merged away by another party
        index.incomplete_all()
    return len(losers)
