"""FolderHub: the hub protocol on a plain folder (local disk or a synced folder).

Atomic writes: a hidden temporary file with a unique name in the same folder, then
``os.replace`` (:mod:`orchestrator.atomic`).
Readers ignore names starting with ``.``. Changes are signalled by watchdog
(inotify on Linux), so the daemon reacts to a sealed result at once.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..atomic import write_with
from ..errors import HubError, HubNotFound
from .base import Hub, Watcher, check_key

log = logging.getLogger(__name__)


class FolderHub(Hub):
    """A hub rooted at a local folder (created if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HubError(f"cannot create hub folder {self.root}: {exc.strerror}") from exc

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def _atomic_write(self, key: str, fill: Callable[[IO[bytes]], object]) -> None:
        """Write through :func:`~orchestrator.atomic.write_with`: readers see the old
        file or the new one, never part; concurrent writers never share a temp file."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_with(path, fill)
        except OSError as exc:  # e.g. a full disk, or a file where a folder of the key is
            raise HubError(f"cannot write {key} to hub {self.url}: {exc.strerror}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(key, lambda f: f.write(data))

    def put_file(self, key: str, src: Path) -> None:
        def copy(f: IO[bytes]) -> None:
            with open(src, "rb") as source:
                shutil.copyfileobj(source, f, 1 << 20)

        self._atomic_write(key, copy)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise HubNotFound(f"{key} not in hub {self.url}") from None
        except OSError as exc:
            raise HubError(f"cannot read {key} from hub {self.url}: {exc.strerror}") from exc

    def get_file(self, key: str, dest: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise HubNotFound(f"{key} not in hub {self.url}")
        def copy(f: IO[bytes]) -> None:
            with open(src, "rb") as source:
                shutil.copyfileobj(source, f, 1 << 20)

        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            write_with(dest, copy)
        except OSError as exc:
            raise HubError(f"cannot copy {key} from hub to {dest}: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str) -> list[str]:
        folder = self.root if prefix == "" else self._path(prefix)
        try:
            return sorted(n for n in os.listdir(folder) if not n.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass  # absent (or "below" a file): nothing to delete

    def watch(self) -> Watcher:
        """A watchdog observer on the hub folder; falls back to polling."""
        watcher = _WatchdogWatcher(self.root)
        return watcher


CHANGES = frozenset({"created", "modified", "moved", "deleted", "closed"})


class _WatchdogWatcher(Watcher):
    def __init__(self, root: Path) -> None:
        super().__init__()
        self._observer = None
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:  # pragma: no cover - watchdog is a dependency
            log.warning("watchdog not installed; polling %s", root)
            return
        outer = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: object) -> None:
                # Only changes count. Watchdog also reports files being opened and
                # closed unwritten: the daemon's own reads would wake it forever.
                if getattr(event, "event_type", "") in CHANGES:
                    outer.notify()

        observer = Observer()
        observer.schedule(Handler(), str(root), recursive=True)
        observer.daemon = True
        try:
            observer.start()
        except OSError as exc:  # e.g. inotify watch limit reached
            log.warning("cannot watch %s (%s); polling instead", root, exc)
            return
        self._observer = observer

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
