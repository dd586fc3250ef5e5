"""Atomic file writes: the one helper every writer of orch uses.

``write_atomic`` fills a temporary file with a unique name beside the target,
flushes it, and renames it over the target: a reader (or a crash) sees the old
file or the new one, never part of one, and two writers at once never share a
temporary file (the loser of a race simply renames second). A failed write
removes its temporary file. Temporary names start with ``.`` and end with
``.tmp``, so :func:`clean_stale` can remove what a killed writer left behind.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

TMP_SUFFIX = ".tmp"


def temp_path(path: Path) -> Path:
    """A unique hidden temporary name beside ``path``, for a writer that fills a file
    itself before renaming it over ``path`` (a download, say)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}{TMP_SUFFIX}")


def write_with(path: Path, fill: Callable[[IO[bytes]], object], mode: int | None = None,
               sync: bool = False) -> None:
    """Write ``path`` atomically: ``fill(f)`` writes the content to an open file.

    ``mode`` sets the permission bits before the file becomes visible (a secret is
    never readable by others, not even for a moment). ``sync`` makes the content
    durable before the rename (for state that must survive a power cut)."""
    path = Path(path)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)  # exactly: the umask does not widen or narrow it
            fill(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes | str, mode: int | None = None,
                 sync: bool = False) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` atomically; see :func:`write_with`."""
    blob = data.encode("utf-8") if isinstance(data, str) else data
    write_with(path, lambda f: f.write(blob), mode=mode, sync=sync)


def clean_stale(folder: Path, older_than: float = 3600.0, recursive: bool = True) -> int:
    """Remove temporary files of :func:`write_atomic` (and other hidden ``*.tmp`` /
    ``*.part`` leftovers) older than ``older_than`` seconds under ``folder``: what a
    killed writer or a full disk left. Returns how many were removed. Never raises."""
    removed = 0
    cutoff = time.time() - older_than
    walker = os.walk(folder) if recursive else [(str(folder), [], _names(folder))]
    for here, _dirs, names in walker:
        for name in names:
            if not name.startswith(".") or not name.endswith((TMP_SUFFIX, ".part")):
                continue
            path = Path(here) / name
            try:
                if path.lstat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
    return removed


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []
