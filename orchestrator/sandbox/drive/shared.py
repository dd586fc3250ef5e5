"""Shared Drives as Drive v3 shows them: which requests may see their files.

Drive's rules, as documented for ``files.list``/``changes.list`` and the per-file
methods (and what a client meets when it forgets a flag):

- a request on a file in a Shared Drive (get, update, delete, download, a create
  or upload into one) without ``supportsAllDrives=true`` is answered 404
  ``notFound``, as if the file did not exist;
- ``files.list`` searches My Drive (``corpora=user``, the default) unless told
  otherwise; Shared Drive items are included only with
  ``includeItemsFromAllDrives=true`` (which needs ``supportsAllDrives=true``);
  ``corpora=drive`` searches one Shared Drive and needs ``driveId``, and ``driveId``
  is allowed only with ``corpora=drive``;
- ``changes.list`` and ``changes.getStartPageToken`` with ``driveId`` follow that
  Shared Drive only; without it, the user's changes (Shared Drive items only with
  ``includeItemsFromAllDrives=true``).

A scope is a predicate on a file's drive id (None: My Drive). Pure functions of
the request's parameters and the state; the caller holds the state lock.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import DriveError, invalid, not_found
from .state import DriveState

Scope = Callable[[str | None], bool]


def _flag(params: dict[str, str], name: str) -> bool:
    return (params.get(name) or "").lower() in ("true", "1")


def all_drives(params: dict[str, str]) -> bool:
    """Whether the request says it supports Shared Drives."""
    return _flag(params, "supportsAllDrives") or _flag(params, "supportsTeamDrives")


def check_access(state: DriveState, file_ids: list[str], params: dict[str, str]) -> None:
    """404 for any of ``file_ids`` in a Shared Drive when the request does not
    support Shared Drives."""
    if all_drives(params):
        return
    for fid in file_ids:
        if fid and state.drive_of(fid) is not None:
            raise not_found(fid)


def _known_drive(state: DriveState, drive_id: str) -> str:
    if drive_id not in state.drives:
        raise DriveError(404, "notFound", f"Shared drive not found: {drive_id}",
                         location="driveId")
    return drive_id


def list_scope(state: DriveState, params: dict[str, str]) -> Scope:
    """The drives a ``files.list`` request searches (400/404 for a bad combination)."""
    corpora = params.get("corpora") or "user"
    drive = params.get("driveId") or ""
    include = _flag(params, "includeItemsFromAllDrives") or _flag(params,
                                                                 "includeTeamDriveItems")
    if (corpora == "drive") != bool(drive):
        raise invalid("The driveId parameter must be specified if and only if corpora is "
                      "set to drive.", location="driveId")
    if include and not all_drives(params):
        raise invalid("The includeItemsFromAllDrives parameter can only be set to true "
                      "when supportsAllDrives is set to true.",
                      location="includeItemsFromAllDrives")
    if corpora in ("drive", "allDrives") and not include:
        raise DriveError(403, "teamDriveAlwaysInclude",
                         "The includeItemsFromAllDrives parameter must be set to true when "
                         "searching Shared Drives.", location="includeItemsFromAllDrives")
    if corpora == "drive":
        wanted = _known_drive(state, drive)
        return lambda d: d == wanted
    if include:
        return lambda d: True
    return lambda d: d is None


def changes_scope(state: DriveState, params: dict[str, str]) -> Scope:
    """The drives a ``changes.list`` request follows."""
    drive = params.get("driveId") or ""
    include = _flag(params, "includeItemsFromAllDrives") or _flag(params,
                                                                 "includeTeamDriveItems")
    if drive:
        if not all_drives(params):
            raise invalid("The driveId parameter requires supportsAllDrives to be set to "
                          "true.", location="driveId")
        wanted = _known_drive(state, drive)
        return lambda d: d == wanted
    if include and all_drives(params):
        return lambda d: True
    return lambda d: d is None
