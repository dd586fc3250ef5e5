"""Reading a Drive request's parameters and body as Drive does (its 400s for bad
values), and the common ``drive#file`` reply. Pure functions."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import fields as F
from .control import Reply
from .errors import DriveError, invalid
from .records import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

if TYPE_CHECKING:
    from .state import DriveState

if TYPE_CHECKING:
    pass


def flag(params: dict[str, str], name: str, default: bool) -> bool:
    """A boolean parameter (``true``/``false``/``1``/``0``, any case; absent: ``default``)."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise invalid(f"Invalid value '{value}'. Values must match the following regular "
                  "expression: '(?i)(true|false)'", location=name)


def page_size(params: dict[str, str]) -> int:
    """``pageSize``: at least 1, at most Drive's maximum (larger values are cut)."""
    raw = params.get("pageSize")
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    try:
        n = int(raw)
    except ValueError:
        raise invalid(f"Invalid value '{raw}'.", location="pageSize") from None
    if n < 1:
        raise invalid(f"Invalid value '{raw}'. Values must be within the range: [1, 1000]",
                      location="pageSize")
    return min(n, MAX_PAGE_SIZE)


def fields_of(params: dict[str, str]) -> F.Tree | None:
    """The parsed ``fields`` selection, or None when the request gave none."""
    raw = params.get("fields")
    return F.parse(raw) if raw else None


def json_body(body: bytes) -> dict[str, Any]:
    """A JSON object body (empty: ``{}``); anything else is Drive's parseError."""
    if not body.strip():
        return {}
    try:
        obj = json.loads(body.decode("utf-8"))
    except ValueError:
        raise DriveError(400, "parseError", "Invalid JSON payload received.") from None
    if not isinstance(obj, dict):
        raise DriveError(400, "parseError", "Invalid JSON payload received.")
    return obj


def parents_of(meta: dict[str, Any]) -> list[str]:
    """The ``parents`` a metadata body names (none when absent or malformed)."""
    parents = meta.get("parents") if isinstance(meta, dict) else None
    return [str(p) for p in parents] if isinstance(parents, list) else []


def check_list_params(params: dict[str, str]) -> None:
    """files.list and changes.list: ``spaces``, ``corpora`` and the drive flags are
    well formed (Drive's 400 otherwise)."""
    for s in (params.get("spaces") or "drive").split(","):
        if s.strip() not in ("drive", "appDataFolder", "photos"):
            raise invalid(f"Invalid Value: {s}", location="spaces")
    corpora = params.get("corpora")
    if corpora and corpora not in ("user", "domain", "drive", "allDrives"):
        raise invalid(f"Invalid Value: {corpora}", location="corpora")
    for name in ("supportsAllDrives", "includeItemsFromAllDrives", "supportsTeamDrives",
                 "includeTeamDriveItems"):
        flag(params, name, False)


def file_reply(st: DriveState, file_id: str, params: dict[str, str], status: int = 200
               ) -> Reply:
    """A ``drive#file`` reply for ``file_id``, filtered by the request's ``fields``."""
    tree = F.select(fields_of(params), F.FILE, F.DEFAULT_FILE)
    return Reply.json(status, F.apply(st.resource(st.get(file_id)), tree))
