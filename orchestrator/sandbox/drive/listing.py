"""Listings of the fake Drive: files.list (``q``, ``orderBy``, pages) and
changes.list, both as seen through the listing lag (see :mod:`.state`). Read-only;
callers hold :attr:`DriveState.lock`."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import query as q_lang
from .errors import invalid
from .records import ROOT_ID, Change, FileRecord

if TYPE_CHECKING:
    from .state import DriveState


def _view(st: DriveState, lag: float) -> dict[str, FileRecord]:
    """The files as listings see them: current, or as of ``lag`` seconds ago."""
    if lag <= 0:
        return st.files
    cutoff = time.monotonic() - lag
    view: dict[str, FileRecord] = {}
    for ch in st.changes:
        if ch.mono > cutoff:
            break
        if ch.snapshot is None:
            view.pop(ch.file_id, None)
        else:
            view[ch.file_id] = ch.snapshot
    return view


def list_files(st: DriveState, q: str | None, order_by: str | None, page_size: int,
               page_token: str | None, lag: float,
               scope: Callable[[str | None], bool] = lambda drive: drive is None
               ) -> tuple[list[FileRecord], str | None]:
    """files.list: the page of matching records and the next page token; only
    files whose drive (None: My Drive) is in ``scope`` are searched."""
    pred = q_lang.compile_query(q, st.user_email, {"root": ROOT_ID})
    hide_trashed = not st.list_trashed_by_default and not q_lang.mentions_trashed(q)
    matches = [f for f in _view(st, lag).values()
               if scope(f.drive_id) and pred(f) and not (hide_trashed and f.trashed)]
    matches = q_lang.sort_files(matches, order_by)
    digest = hashlib.sha1(f"{q}\0{order_by}".encode()).hexdigest()[:12]
    offset = 0
    if page_token:
        try:
            tok = json.loads(base64.urlsafe_b64decode(page_token.encode()))
            offset = int(tok["o"])
            if tok["h"] != digest:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise invalid("Invalid Value", location="pageToken") from None
    page = matches[offset:offset + page_size]
    nxt = None
    if offset + page_size < len(matches):
        raw = json.dumps({"o": offset + page_size, "h": digest}).encode()
        nxt = base64.urlsafe_b64encode(raw).decode()
    return page, nxt


def start_page_token(st: DriveState) -> str:
    """changes.getStartPageToken: the id the next change will get."""
    return str(len(st.changes) + 1)


def list_changes(st: DriveState, page_token: str, page_size: int, include_removed: bool,
                 lag: float, scope: Callable[[str | None], bool] = lambda d: d is None
                 ) -> tuple[list[Change], str | None, str | None]:
    """changes.list: (changes, nextPageToken, newStartPageToken).

    With coalescing (Drive's behaviour) a file that changed several times
    appears once, at its latest visible change.
    """
    try:
        start = int(page_token)
        if start < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise invalid("Invalid Value", location="pageToken") from None
    cutoff = time.monotonic() - lag
    visible = len(st.changes)
    if lag > 0:
        while visible > 0 and st.changes[visible - 1].mono > cutoff:
            visible -= 1
    latest: dict[str, int] = {}
    if st.coalesce_changes:
        for ch in st.changes[start - 1:visible]:
            latest[ch.file_id] = ch.id
    out: list[Change] = []
    pos = start
    while pos <= visible and len(out) < page_size:
        ch = st.changes[pos - 1]
        pos += 1
        if st.coalesce_changes and latest.get(ch.file_id) != ch.id:
            continue
        if (ch.snapshot is None and not include_removed) or not scope(ch.drive_id):
            continue
        out.append(ch)
    if pos > visible:
        return out, None, str(max(visible + 1, start))
    return out, str(pos), None
