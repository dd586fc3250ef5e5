"""Hubs: the small file stores through which the daemon and workers talk.

``open_hub(url)`` picks the transport from the URL; nothing above this package
knows which one it has. Only the folder hub exists so far.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import NotConfiguredError, UsageError
from .base import Hub


def open_hub(url: str, credentials: Path | None = None, shared_drive: str | None = None,
             staleness: float = 2.0) -> Hub:
    """``/path`` or ``folder:/path`` → FolderHub; ``drive:FOLDER`` → DriveHub (signed
    in with ``credentials``, else $ORCH_DRIVE_CREDENTIALS; the endpoint from
    $ORCH_DRIVE_ROOT_URL if set). ``sftp:`` is a recognised name, not built yet."""
    from .folder import FolderHub

    if not url:
        raise UsageError("no hub given")
    scheme, sep, rest = url.partition(":")
    if sep and scheme == "folder":
        return FolderHub(Path(rest))
    if sep and scheme == "drive":
        import os

        from ..drive_auth import CREDENTIALS_ENV, load_credentials
        from .drive import DriveHub

        path = credentials or (Path(os.environ[CREDENTIALS_ENV]) if os.environ.get(
            CREDENTIALS_ENV) else None)
        if path is None:
            raise UsageError(f"{url}: no Drive credentials: run `orch auth`, or pass "
                             f"--credentials / set {CREDENTIALS_ENV}")
        return DriveHub(rest, credentials=load_credentials(path),
                        shared_drive=shared_drive or None, staleness=staleness)
    if sep and scheme in ("sftp", "ssh"):
        raise NotConfiguredError(f"the {scheme} hub is not available in this version of orch")
    return FolderHub(Path(url))


def project_hub(project: object, name: str) -> Hub:
    """The hub called ``name`` of a project: ``local`` (its folder hub) or
    ``remote`` (its ``hub`` setting, e.g. a Drive folder)."""
    from ..config import Project

    assert isinstance(project, Project)
    if name == "local":
        return open_hub(project.hub_url)
    if name == "remote" and project.settings.hub:
        return open_hub(project.remote_hub_url, credentials=project.drive_credentials,
                        shared_drive=project.settings.drive_shared_drive,
                        staleness=project.settings.drive_poll_interval)
    raise UsageError(f"this project has no hub {name!r} (set `hub` in its settings)")


__all__ = ["Hub", "open_hub", "project_hub"]
