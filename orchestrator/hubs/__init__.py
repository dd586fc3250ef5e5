"""Hubs: the small file stores through which the daemon and workers talk.

``open_hub(url)`` picks the transport from the URL; nothing above this package
knows which one it has. Only the folder hub exists so far.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import NotConfiguredError, UsageError
from .base import Hub


def open_hub(url: str) -> Hub:
    """``/path`` or ``folder:/path`` → FolderHub; ``drive:…`` and ``sftp:…`` are
    recognised names whose transports are not built yet."""
    from .folder import FolderHub

    if not url:
        raise UsageError("no hub given")
    scheme, sep, rest = url.partition(":")
    if sep and scheme == "folder":
        return FolderHub(Path(rest))
    if sep and scheme in ("drive", "sftp", "ssh"):
        raise NotConfiguredError(f"the {scheme} hub is not available in this version of orch")
    return FolderHub(Path(url))


__all__ = ["Hub", "open_hub"]
