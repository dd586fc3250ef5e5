"""Code snapshots and data files as content-addressed blobs.

A snapshot is taken at submit time: git-aware (tracked plus untracked files that
are not ignored), minus ``.orchignore`` patterns, minus credentials and orch's
own folders, which are never included whatever the ignore files say. Blobs live
in the project's local hub (``.orch/hub/blobs/<sha256>``): written once via a
temporary file and a rename, never modified, shared by every job that uses the
same bytes.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .archive import HashingWriter, sha256_file, tree_files, write_tar
from .errors import BundleError
from .logs import get_logger
from .models import DataRef

log = get_logger(__name__)

#: Never in a snapshot, whatever .gitignore/.orchignore say (matched per path part).
ALWAYS_EXCLUDED = (
    ".git", ".orch", ".env", ".env.*", "client_secrets*.json", "token*.json",
    "credentials*.json", "*.pem", "*.key", "id_rsa*", "id_ed25519*", ".netrc",
    "service_account*.json",
)
#: Skipped by default: environments and caches nobody means to ship.
JUNK = (
    ".venv", "venv", "__pycache__", "*.pyc", ".ipynb_checkpoints", "node_modules",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".DS_Store",
)


def _translate(pattern: str) -> re.Pattern[str]:
    """A gitignore-style glob (``*``, ``?``, ``**``) as a regex over posix paths."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


@dataclass(frozen=True)
class IgnoreRule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


def parse_ignore(text: str) -> list[IgnoreRule]:
    """Rules of an ``.orchignore`` file (gitignore syntax: ``#``, ``!``, ``/``, ``**``)."""
    rules: list[IgnoreRule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        if not anchored:
            line = "**/" + line
        rules.append(IgnoreRule(_translate(line), negate, dir_only))
    return rules


def ignored(rel: str, rules: list[IgnoreRule]) -> bool:
    """Whether the file ``rel`` is excluded: a rule matching the file itself or any
    folder above it; the last matching rule wins."""
    parts = rel.split("/")
    result = False
    for rule in rules:
        for depth in range(1, len(parts) + 1):
            candidate = "/".join(parts[:depth])
            is_dir = depth < len(parts)
            if rule.dir_only and not is_dir:
                continue
            if rule.regex.match(candidate):
                result = not rule.negate
                break
    return result


#: Look like credentials to the patterns above, but are ordinary files.
NOT_CREDENTIALS = ("tokenizer*.json",)


def _part_matches(rel: str, patterns: tuple[str, ...]) -> bool:
    return any(
        fnmatch.fnmatchcase(part, p) and not any(fnmatch.fnmatchcase(part, n)
                                                for n in NOT_CREDENTIALS)
        for part in rel.split("/") for p in patterns
    )


def _in_git_checkout(root: Path) -> bool:
    return any((folder / ".git").exists() for folder in (root, *root.parents))


def _git_files(root: Path) -> list[str] | None:
    if not _in_git_checkout(root):
        return None
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
            capture_output=True, timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return [p for p in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if p]


def _walk_files(root: Path) -> list[str]:
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _part_matches(d, ALWAYS_EXCLUDED + JUNK))
        rel_folder = Path(folder).relative_to(root)
        found += [(rel_folder / n).as_posix() for n in names]
    return found


def snapshot_files(
    root: Path, exclude: set[str] = frozenset(), outputs_dir: str = "models"  # type: ignore[assignment]
) -> list[tuple[str, Path]]:
    """The files a snapshot of ``root`` holds, as ``(relative name, path)``, sorted.

    ``exclude`` holds project-relative paths shipped separately (``--data``)."""
    names = _git_files(root)
    if not names:  # not a git checkout, or a folder that git ignores as a whole
        names = _walk_files(root)
    rules_file = root / ".orchignore"
    rules = parse_ignore(rules_file.read_text(encoding="utf-8")) if rules_file.is_file() else []
    out_prefix = outputs_dir.strip("/")
    chosen: list[tuple[str, Path]] = []
    for rel in sorted(set(names)):
        if _part_matches(rel, ALWAYS_EXCLUDED + JUNK):
            continue
        if out_prefix and (rel == out_prefix or rel.startswith(out_prefix + "/")):
            continue
        if any(rel == e or rel.startswith(e.rstrip("/") + "/") for e in exclude):
            continue
        if rules and ignored(rel, rules):
            continue
        path = root / rel
        if path.is_file():  # tracked-but-deleted files and dangling links drop out
            chosen.append((rel, path))
    return chosen


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

    def add_file(self, src: Path) -> tuple[str, int]:
        """Store a copy of ``src``; ``(sha256, size)``. No copy if already stored."""
        sha = sha256_file(src)
        if not self.has(sha):
            import tempfile

            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".blob-", dir=self.folder)
            os.close(fd)
            shutil.copyfile(src, tmp)
            self._commit(Path(tmp), sha)
        return sha, src.stat().st_size

    def add_tar(self, files: list[tuple[str, Path]]) -> tuple[str, int]:
        """Store a deterministic tar.gz of ``files``; ``(sha256, size)``."""
        import tempfile

        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".blob-", dir=self.folder)
        with os.fdopen(fd, "wb") as raw:
            writer = HashingWriter(raw)
            write_tar(writer, files)  # type: ignore[arg-type]
        sha = writer.hash.hexdigest()
        self._commit(Path(tmp), sha)
        return sha, writer.size


def take_snapshot(
    root: Path, blobs: BlobStore, exclude: set[str], outputs_dir: str, max_mb: float,
    cache: Path | None = None,
) -> tuple[str, int, list[str]]:
    """Snapshot the project into a blob: ``(sha256, bytes, names of the files)``.

    With ``cache`` (a JSON file orch owns), a project whose file list, sizes and
    modification times are unchanged since the last snapshot reuses that blob
    without re-reading the files: the heuristic git's index uses."""
    files = snapshot_files(root, exclude, outputs_dir)
    stats = [(name, path.stat()) for name, path in files]
    total = sum(st.st_size for _, st in stats)
    if total > max_mb * 1024 * 1024:
        biggest = sorted(stats, key=lambda f: f[1].st_size, reverse=True)[:3]
        raise BundleError(
            f"code snapshot would be {total / 1e6:.0f} MB (limit {max_mb:.0f} MB); biggest: "
            + ", ".join(n for n, _ in biggest)
            + ". Put data in .orchignore and pass it with --data"
        )
    names = [name for name, _ in files]
    key = [[name, st.st_size, st.st_mtime_ns, st.st_mode & 0o111] for name, st in stats]
    if cache is not None:
        try:
            cached = json.loads(cache.read_text())
            if cached["files"] == key and blobs.has(cached["sha256"]):
                return cached["sha256"], int(cached["size"]), names
        except (OSError, ValueError, KeyError, TypeError):
            pass
    sha, size = blobs.add_tar(files)
    if cache is not None:
        tmp = cache.with_name(cache.name + ".partial")
        tmp.write_text(json.dumps({"files": key, "sha256": sha, "size": size}))
        os.replace(tmp, cache)
    return sha, size, names


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
