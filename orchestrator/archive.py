"""Tar archives and checksums, standard library only (the worker imports this).

``write_tar`` makes byte-identical archives for identical inputs (sorted entries,
fixed times and owners), so a snapshot of unchanged code has the same sha256 and
is stored once. ``safe_extract`` checks every member before writing anything and
refuses the whole archive if one would land outside the destination.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .errors import UnsafeArchiveError

if TYPE_CHECKING:
    import tarfile

FIXED_MTIME = 1577836800  # 2020-01-01: fixed, so identical inputs hash identically
CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


class HashingWriter:
    """A write-only file object that hashes and counts what passes through it."""

    def __init__(self, target: BinaryIO) -> None:
        import hashlib

        self.target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.target.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.target.flush()


def write_tar(
    out: BinaryIO, files: Iterable[tuple[str, Path]], compress: bool = True,
    keep_mtime: bool = False,
) -> None:
    """Write ``(archive name, source path)`` pairs as a tar(.gz) of regular files:
    deterministic (fixed times) unless ``keep_mtime`` keeps each file's own
    modification time (results: a pulled model says when it was trained)."""
    import gzip
    import tarfile

    stream: BinaryIO = out
    if compress:
        stream = gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0,  # type: ignore[assignment]
                               compresslevel=6)
    try:
        with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, src in sorted(files, key=lambda item: item[0]):
                st = src.stat()
                info = tarfile.TarInfo(name)
                info.size = st.st_size
                info.mtime = int(st.st_mtime) if keep_mtime else FIXED_MTIME
                info.mode = 0o755 if st.st_mode & 0o111 else 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(src, "rb") as f:
                    tar.addfile(info, f)
    finally:
        if compress:
            stream.close()


def tree_files(root: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``root`` as ``(relative posix name, path)``."""
    found: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    return found


def regular_files(root: Path) -> list[tuple[str, Path]]:
    """Every regular file under ``root`` as ``(relative posix name, path)``, sorted;
    symlinks (to files or folders) are not followed: a run cannot smuggle a file from
    outside its folder into its result by linking to it."""
    found: list[tuple[str, Path]] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                found.append((path.relative_to(root).as_posix(), path))
    return found


def _resolve(path: str, links: dict[str, str], depth: int = 0) -> str | None:
    """Where ``path`` (relative to the destination) really points once the
    archive's own symlinks are followed; None if it leaves the destination."""
    parts: list[str] = []
    for comp in path.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(comp)
        target = links.get("/".join(parts))
        if target is None:
            continue
        if target.startswith("/") or depth > 32:
            return None
        base = "/".join(parts[:-1])
        resolved = _resolve(f"{base}/{target}" if base else target, links, depth + 1)
        if resolved is None:
            return None
        parts = resolved.split("/") if resolved else []
    return "/".join(parts)


def check_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """All members, or UnsafeArchiveError naming the first that would escape.

    Paths are resolved through the symlinks the archive itself creates, so a
    chain such as ``a -> .`` then ``b -> a/..`` is caught before anything is
    written."""
    members = tar.getmembers()
    links: dict[str, str] = {}
    for m in members:
        name = m.name
        if name.startswith("/") or os.path.isabs(name):
            raise UnsafeArchiveError(f"archive member {name!r} points outside the destination")
        if m.isdev() or m.isfifo():
            raise UnsafeArchiveError(f"archive member {name!r} is a device or fifo")
        parent, _, leaf = posixpath.normpath(name).rpartition("/")
        where = _resolve(parent, links)
        if where is None or leaf == "..":
            raise UnsafeArchiveError(f"archive member {name!r} points outside the destination")
        real = f"{where}/{leaf}" if where else leaf
        if m.issym() or m.islnk():
            # a symlink's target is relative to its folder; a hard link's to the root
            target = m.linkname if m.islnk() else (f"{where}/{m.linkname}" if where
                                                   else m.linkname)
            if m.linkname.startswith("/") or _resolve(target, links) is None:
                raise UnsafeArchiveError(
                    f"archive member {name!r} links to {m.linkname!r}, outside the destination"
                )
            if m.issym():
                links[real] = m.linkname
    return members


def safe_extract(archive: Path, dest: Path) -> list[str]:
    """Extract ``archive`` (tar or tar.gz) into ``dest``; return the member names.

    Every member is checked first; one unsafe member refuses the whole archive
    and nothing is written. Python's ``data`` filter is applied as well.
    """
    import gzip
    import tarfile
    import zlib

    unreadable = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            members = check_members(tar)  # reads the whole archive: truncation shows here
    except unreadable as exc:
        raise UnsafeArchiveError(f"{archive.name} is not a readable archive: {exc}") from exc
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            tar.extractall(dest, members=tar.getmembers(), filter="data")
    except unreadable as exc:
        raise UnsafeArchiveError(f"{archive.name} is not a readable archive: {exc}") from exc
    return [m.name for m in members]
