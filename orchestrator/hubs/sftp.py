"""SftpHub: the hub protocol on a folder of an SSH host, read and written by the
daemon over SFTP (one connection, :class:`~orchestrator.ssh.HostLink`, reopened
after a drop). The host's workers use the same folder as a plain folder hub.

Atomic writes as on a folder: a hidden temporary file (unique name) in the same
folder, then a POSIX rename (OpenSSH's ``posix-rename`` extension, which replaces
the target). Readers ignore names starting with ``.``. A host that cannot be
reached raises :class:`~orchestrator.errors.HubError` (the scheduler leaves that
host's jobs waiting); a missing key raises HubNotFound.
"""

from __future__ import annotations

import errno
import posixpath
import secrets
import shlex
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

from ..atomic import write_with
from ..errors import HubError, HubNotFound
from ..logs import get_logger
from .base import Hub, PollingWatcher, Watcher, check_key

if TYPE_CHECKING:
    import paramiko

    from ..ssh import HostLink

log = get_logger(__name__)
T = TypeVar("T")
_MISSING = (errno.ENOENT, errno.ENOTDIR)


class SftpHub(Hub):
    """A hub at the absolute folder ``root`` of ``link``'s host."""

    def __init__(self, link: HostLink, root: str) -> None:
        self.link = link
        self.root = root.rstrip("/") or "/"
        self.url = f"sftp:{link.host.name}:{self.root}"
        self._made: set[str] = set()  # folders known to exist

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, check_key(key))

    def _do(self, what: str, key: str, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """``fn`` over the link; errors become HubNotFound / HubError (one line)."""
        from ..ssh import HostError

        try:
            return self.link.call(f"{what} {key}", fn)
        except HostError as exc:
            raise HubError(str(exc)) from None
        except OSError as exc:
            if exc.errno in _MISSING:
                raise HubNotFound(f"{key} not in hub {self.url}") from None
            text = exc.strerror or str(exc)
            if text in ("", "Failure"):  # sftp-server says only that, for a full disk too
                text = "the host refused (is its disk full?)"
            raise HubError(f"cannot {what} {key} on hub {self.url}: {text}") from None
        except Exception as exc:  # noqa: BLE001 - paramiko's own errors
            raise HubError(f"cannot {what} {key} on hub {self.url}: {exc}") from None

    def _makedirs(self, sftp: paramiko.SFTPClient, folder: str) -> None:
        if folder in self._made or folder in ("", "/"):
            return
        try:
            if stat.S_ISDIR(sftp.stat(folder).st_mode or 0):
                self._made.add(folder)
                return
        except OSError as exc:
            if exc.errno not in _MISSING:
                raise
        self._makedirs(sftp, posixpath.dirname(folder))
        try:
            sftp.mkdir(folder)
        except OSError:
            if not stat.S_ISDIR(sftp.stat(folder).st_mode or 0):  # lost a race: fine
                raise
        self._made.add(folder)

    def _atomic_put(self, key: str, fill: Callable[[IO[bytes]], object]) -> None:
        path = self._path(key)
        folder, name = posixpath.split(path)
        temp = posixpath.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")

        def put(sftp: paramiko.SFTPClient) -> None:
            self._makedirs(sftp, folder)
            try:
                with sftp.open(temp, "wb") as f:
                    f.set_pipelined(True)
                    fill(f)  # type: ignore[arg-type]
                sftp.posix_rename(temp, path)
            except BaseException:
                try:
                    sftp.remove(temp)
                except Exception:  # noqa: BLE001 - best effort, after the real error
                    pass
                raise

        self._do("write", key, put)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_put(key, lambda f: f.write(data))

    def put_file(self, key: str, src: Path) -> None:
        def copy(f: IO[bytes]) -> None:
            with open(src, "rb") as source:
                while chunk := source.read(1 << 20):
                    f.write(chunk)

        self._atomic_put(key, copy)

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)

        def read(sftp: paramiko.SFTPClient) -> bytes:
            try:
                with sftp.open(path, "rb") as f:
                    f.prefetch()
                    return bytes(f.read())
            except OSError as exc:  # a folder opens, then fails to read: not a file
                if exc.errno is None and stat.S_ISDIR(sftp.stat(path).st_mode or 0):
                    raise FileNotFoundError(errno.ENOENT, "a folder") from None
                raise

        return self._do("read", key, read)

    def get_file(self, key: str, dest: Path) -> None:
        path = self._path(key)

        def fetch(sftp: paramiko.SFTPClient) -> None:
            def fill(f: IO[bytes]) -> None:
                sftp.getfo(path, f)

            dest.parent.mkdir(parents=True, exist_ok=True)
            write_with(dest, fill)

        if not self.exists(key):
            raise HubNotFound(f"{key} not in hub {self.url}")
        self._do("download", key, fetch)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            self._do("look up", key, lambda sftp: sftp.stat(path))
        except HubNotFound:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        folder = self.root if prefix == "" else self._path(prefix)
        try:
            names = self._do("list", prefix or "/", lambda sftp: sftp.listdir(folder))
        except HubNotFound:
            return []
        return sorted(n for n in names if not n.startswith("."))

    def delete(self, key: str) -> None:
        path = self._path(key)

        def remove(sftp: paramiko.SFTPClient, target: str) -> None:
            try:
                mode = sftp.lstat(target).st_mode or 0
            except OSError as exc:
                if exc.errno in _MISSING:
                    return
                raise
            if stat.S_ISDIR(mode):
                for name in sftp.listdir(target):
                    remove(sftp, posixpath.join(target, name))
                sftp.rmdir(target)
                self._made = {d for d in self._made
                              if d != target and not d.startswith(target + "/")}
            else:
                try:
                    sftp.remove(target)
                except OSError as exc:
                    if exc.errno not in _MISSING:
                        raise

        self._do("delete", key, lambda sftp: remove(sftp, path))

    def watch(self) -> Watcher:
        """A watcher that polls (once a second) a digest of the modification times of
        the hub's folders: every write (a rename into a folder) and delete changes one."""
        try:
            seen: str | None = self.digest()
        except HubError as exc:
            log.warning("%s", exc)
            seen = None

        def changed() -> bool:
            nonlocal seen
            now = self.digest()
            moved = seen is not None and now != seen
            seen = now
            return moved

        return PollingWatcher(changed, 1.0)

    def digest(self) -> str:
        """One command on the host: what changes whenever anything in the hub does."""
        from ..ssh import HostError

        root = shlex.quote(self.root)
        try:
            _, out, _ = self.link.run(
                f"find {root} -type d -printf '%T@ %p\\n' 2>/dev/null | sha256sum", timeout=30)
        except HostError as exc:
            raise HubError(str(exc)) from None
        return out.strip()
