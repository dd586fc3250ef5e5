"""Code snapshots and data files as content-addressed blobs.

What a snapshot holds is decided by :mod:`.snapshot`; this module packs it.
Blobs live in the project's local hub (``.orch/hub/blobs/<sha256>``): written once
via a temporary file and a rename, never modified, shared by every job that uses
the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .archive import HashingWriter, sha256_file, tree_files, write_tar
from .atomic import temp_path, write_atomic
from .errors import BundleError
from .logs import get_logger
from .models import DataRef
from .snapshot import Excluded, Plan, sniffed

log = get_logger(__name__)

class BlobStore:
    """Content-addressed files under one folder. Writes are atomic and idempotent."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, sha: str) -> Path:
        return self.folder / sha

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def _commit(self, tmp: Path, sha: str) -> None:
        target = self.path(sha)
        if target.exists():
            tmp.unlink()
        else:
            os.replace(tmp, target)

    def _filled(self, fill: Callable[[BinaryIO], None]) -> Path:
        """A temporary file of the store (a unique hidden ``*.tmp``: what a killed
        writer leaves is cleaned up later) filled by ``fill``; removed on failure."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(self.folder / "blob")
        try:
            with open(tmp, "xb") as f:
                fill(f)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def add_file(self, src: Path) -> tuple[str, int]:
        """Store a copy of ``src``; ``(sha256, size)``. No copy if already stored."""
        sha = sha256_file(src)
        if not self.has(sha):
            def copy(f: BinaryIO) -> None:
                with open(src, "rb") as source:
                    shutil.copyfileobj(source, f, 1 << 20)

            self._commit(self._filled(copy), sha)
        return sha, src.stat().st_size

    def add_tar(self, files: list[tuple[str, Path]]) -> tuple[str, int]:
        """Store a deterministic tar.gz of ``files``; ``(sha256, size)``."""
        writer: HashingWriter | None = None

        def pack(f: BinaryIO) -> None:
            nonlocal writer
            writer = HashingWriter(f)
            write_tar(writer, files)  # type: ignore[arg-type]

        tmp = self._filled(pack)
        assert writer is not None
        sha = writer.hash.hexdigest()
        self._commit(tmp, sha)
        return sha, writer.size


def take_snapshot(blobs: BlobStore, listed: Plan, max_mb: float,
                  cache: Path | None = None) -> tuple[str, int, Plan]:
    """Pack the snapshot ``listed`` (a :func:`snapshot.plan` made without sniffing
    contents) into a blob: ``(sha256, bytes, the final plan)``.

    The files' contents are then checked for key material (those files are left
    out). With ``cache`` (a JSON file orch owns), a project whose file list, sizes and
    modification times are unchanged since the last snapshot reuses that blob and
    that check without re-reading the files: the heuristic git's index uses."""
    stats = [(name, path.stat()) for name, path in listed.files]
    key = [[name, st.st_size, st.st_mtime_ns, st.st_mode & 0o111] for name, st in stats]
    if cache is not None:
        try:
            cached = json.loads(cache.read_text())
            if cached["files"] == key and blobs.has(cached["sha256"]):
                secret = {rel: why for rel, why in cached["secret"]}
                final = Plan(tuple(f for f in listed.files if f[0] not in secret),
                             tuple(sorted([*listed.excluded,
                                           *(Excluded(r, w, True) for r, w in secret.items())],
                                          key=lambda e: e.rel)), listed.warnings)
                return cached["sha256"], int(cached["size"]), final
        except (OSError, ValueError, KeyError, TypeError):
            pass
    final = sniffed(listed)
    sizes = {name: st.st_size for name, st in stats}
    total = sum(sizes[name] for name, _ in final.files)
    if total > max_mb * 1024 * 1024:
        biggest = sorted(final.files, key=lambda f: sizes[f[0]], reverse=True)[:3]
        raise BundleError(
            f"code snapshot would be {total / 1e6:.0f} MB (limit {max_mb:.0f} MB); biggest: "
            + ", ".join(n for n, _ in biggest)
            + ". Put data in .orchignore and pass it with --data"
        )
    sha, size = blobs.add_tar(list(final.files))
    if cache is not None:
        found = [[e.rel, e.why] for e in final.excluded if e not in listed.excluded]
        write_atomic(cache, json.dumps({"files": key, "sha256": sha, "size": size,
                                        "secret": found}))
    return sha, size, final


def add_data(root: Path, blobs: BlobStore, given: str) -> DataRef:
    """Store a ``--data`` file or folder as a blob. Inside the project it keeps its
    relative path in the job's working dir; outside, it lands at its base name."""
    path = Path(given).expanduser()
    path = (Path.cwd() / path).resolve() if not path.is_absolute() else path.resolve()
    if not path.exists():
        raise BundleError(f"data path {given} does not exist")
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.name
    try:
        if path.is_dir():
            sha, size = blobs.add_tar(tree_files(path))
            return DataRef(path=rel, sha256=sha, size=size, kind="dir")
        sha, size = blobs.add_file(path)
    except OSError as exc:
        raise BundleError(f"cannot read data {given}: {exc.strerror or exc}") from exc
    return DataRef(path=rel, sha256=sha, size=size, kind="file")
