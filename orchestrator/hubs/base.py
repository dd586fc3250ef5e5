"""The hub interface: a key/value file store with whole-file, atomic writes.

Keys are posix-style relative paths (``runs/ab12/1/status.json``). Every file has
exactly one writer (see DESIGN.md); so a hub needs no compare-and-swap, only:
``put`` atomic (a reader sees the old or the new file, never part of one),
``delete`` idempotent, ``list`` of a folder's immediate children.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import HubError, HubNotFound

if TYPE_CHECKING:
    from ..protocol import Document

D = TypeVar("D", bound="Document")

log = logging.getLogger(__name__)


def check_key(key: str) -> str:
    """Reject keys that are absolute, empty, or climb out with ``..``."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise HubError(f"bad hub key {key!r}")
    return key


class Watcher:
    """Wakes a waiter when the hub may have changed. The base one only sleeps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True if woken by a change."""
        woke = self._event.wait(timeout)
        self._event.clear()
        return woke

    def close(self) -> None:
        pass


class PollingWatcher(Watcher):
    """For hubs with no change events (Drive, SFTP): asks ``changed()`` every
    ``interval`` seconds while waiting. A HubError from it is logged and counts as
    no change (the next tick polls anyway)."""

    def __init__(self, changed: Callable[[], bool], interval: float) -> None:
        super().__init__()
        self.changed = changed
        self.interval = interval

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if super().wait(0):
                return True
            try:
                if self.changed():
                    return True
            except HubError as exc:
                log.warning("%s", exc)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if super().wait(min(left, self.interval)):
                return True


class Hub(ABC):
    """One hub. Implementations must make ``put_*`` atomic and ``delete`` idempotent."""

    url: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_file(self, key: str, src: Path) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The file's bytes, or HubNotFound."""

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> None:
        """Download to ``dest`` (atomically), or HubNotFound."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Names of the immediate children of folder ``prefix`` ("" is the hub's
        root); [] if there is no such folder."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a file or a whole folder; no error if absent."""

    def watch(self) -> Watcher:
        """A watcher for changes; the default never wakes early (pure polling)."""
        return Watcher()

    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, json.dumps(obj, sort_keys=True).encode())

    def get_json(self, key: str) -> dict[str, Any] | None:
        """The decoded JSON object, or None if the file is absent or unreadable
        (a half-synced file on some transports looks like that; callers retry)."""
        try:
            data = self.get_bytes(key)
        except HubNotFound:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            log.warning("unreadable JSON at %s on %s", key, self.url)
            return None
        return value if isinstance(value, dict) else None

    def put_doc(self, key: str, doc: Document) -> None:
        """Write a protocol document (atomic, like every put)."""
        self.put_bytes(key, doc.to_json())

    def get_doc(self, key: str, kind: type[D]) -> D | None:
        """The document at ``key``, or None if absent or not (yet) readable JSON.
        ProtocolError if it is of another protocol version or malformed."""
        raw = self.get_json(key)
        return None if raw is None else kind.from_dict(raw)

    def get_doc_text(self, key: str, kind: type[D],
                     unless: str | None = None) -> tuple[D, str] | None:
        """The document at ``key`` with the JSON text it was read from, like
        :meth:`get_doc`; also None when that text equals ``unless`` (unchanged
        since the caller last read it: nothing is decoded)."""
        try:
            text = self.get_bytes(key).decode("utf-8", "replace")
        except HubNotFound:
            return None
        if text == unless:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            log.warning("unreadable JSON at %s on %s", key, self.url)
            return None
        return kind.from_dict(value), text

    def local_path(self, key: str) -> Path | None:
        """A local file holding ``key``, for hubs that have one (folder); else None."""
        return None

    def account(self) -> str | None:
        """Whose account this hub is reached as (Drive: the signed-in user), for the
        sessions a worker reports; None where there is none, or it cannot be told."""
        return None
