"""What a code snapshot holds, and why each left-out file was left out.

The candidates are git-aware (tracked plus untracked files that are not ignored;
every file below the project when it is not a git checkout). Then, for each path:

- credentials never ship, whatever the ignore files say (:mod:`.credentials`,
  by name first, by content for the files that remain);
- environments and caches (``.venv``, ``__pycache__``…) are skipped;
- orch's outputs folder, files orch delivered into the project, and ``--data``
  paths (shipped as blobs of their own) are not code;
- ``.orchignore`` (gitignore syntax) leaves out what the user says;
- a symlink whose target lies outside the project is never followed: it is left
  out with a warning (data outside the project goes with ``--data``).

:func:`plan` returns the files that ship and the reasons for the others; nothing
is written. The junk folders a walk skips are reported once each, not file by file.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .credentials import glob_match, why_by_content, why_by_name

#: Skipped by default: environments and caches nobody means to ship.
JUNK = (
    ".venv", "venv", "__pycache__", "*.pyc", ".ipynb_checkpoints", "node_modules",
    ".mypy_cache", ".pytest_cache", ".ruff_cache", ".DS_Store",
)
JUNK_WHY = "an environment or cache"
#: Never in a snapshot, whatever the ignore files say (besides credentials).
NEVER = {".git": "git metadata", ".orch": "orch's own state (store, hub, keys)"}


@dataclass(frozen=True)
class IgnoreRule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool


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


def _is_junk(rel: str) -> bool:
    return any(glob_match(part, p) for part in rel.split("/") for p in JUNK)


def _in_git_checkout(root: Path) -> bool:
    return any((folder / ".git").exists() for folder in (root, *root.parents))


def _git_files(root: Path) -> list[str] | None:
    if not _in_git_checkout(root):
        return None
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
            capture_output=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return [p for p in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if p]


@dataclass(frozen=True)
class Excluded:
    """A path left out of a snapshot (a folder ends with ``/``), why, and whether
    it was left out as a credential."""

    rel: str
    why: str
    secret: bool = False


@dataclass(frozen=True)
class Plan:
    """What a snapshot of a project holds: ``files`` as ``(name, path)``, sorted;
    ``excluded`` with their reasons; ``warnings`` to show the user, one line each."""

    files: tuple[tuple[str, Path], ...]
    excluded: tuple[Excluded, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def credentials(self) -> list[Excluded]:
        """The paths left out because they hold (or are named like) credentials."""
        return [e for e in self.excluded if e.secret]


@dataclass
class _Walk:
    names: list[str] = field(default_factory=list)
    pruned: list[Excluded] = field(default_factory=list)


def _never(rel: str) -> str | None:
    return next((why for part in rel.split("/") for name, why in NEVER.items()
                 if part == name), None)


def _walk(root: Path) -> _Walk:
    """Every file below ``root``, not descending into orch's and git's folders, junk,
    credential folders and folder symlinks (each of those reported once)."""
    out = _Walk()
    for folder, dirs, names in os.walk(root):
        rel_folder = Path(folder).relative_to(root)
        keep = []
        for d in sorted(dirs):
            rel = (rel_folder / d).as_posix()
            if os.path.islink(os.path.join(folder, d)):
                out.names.append(rel)  # judged like any other link
                continue
            why = _never(d) or (JUNK_WHY if _is_junk(d) else None)
            secret = why_by_name(rel, folder=True) if why is None else None
            if why or secret:
                out.pruned.append(Excluded(rel + "/", why or str(secret), secret is not None))
                continue
            keep.append(d)
        dirs[:] = keep
        out.names += [(rel_folder / n).as_posix() for n in names]
    return out


def plan(root: Path, data: frozenset[str] = frozenset(), outputs_dir: str = "models",
         secrets: frozenset[str] = frozenset(),
         delivered: dict[str, str] | None = None, sniff: bool = True) -> Plan:
    """The snapshot of the project at ``root``. ``data``: project paths shipped as
    ``--data``; ``secrets``: project paths of orch's configured credential files;
    ``delivered``: project paths orch placed there, by the job that delivered them.
    With ``sniff`` False, files are not opened (their content is judged later)."""
    root = root.resolve()
    listed = _git_files(root)
    walk = _walk(root) if not listed else _Walk(listed)
    rules_file = root / ".orchignore"
    rules = parse_ignore(rules_file.read_text(encoding="utf-8")) if rules_file.is_file() else []
    out_prefix = outputs_dir.strip("/")
    delivered = delivered or {}
    files: list[tuple[str, Path]] = []
    excluded = list(walk.pruned)
    warnings: list[str] = []

    for rel in sorted(set(walk.names)):
        path = root / rel
        why, secret = _never(rel), why_by_name(rel, secrets)
        if why is None and secret is None:
            why = _left_out(rel, path, root, rules, out_prefix, data, delivered, warnings)
            if why is None and path.is_symlink() and path.resolve().is_relative_to(root):
                secret = why_by_name(path.resolve().relative_to(root).as_posix(), secrets)
            if why is None and secret is None:
                if not path.is_file():
                    continue  # tracked-but-deleted files and dangling links drop out
                secret = why_by_content(path) if sniff else None
        if why is not None or secret is not None:
            excluded.append(Excluded(rel, why or str(secret), why is None))
        else:
            files.append((rel, path))
    return Plan(tuple(files), tuple(sorted(excluded, key=lambda e: e.rel)), tuple(warnings))


def _under(rel: str, top: str) -> bool:
    top = top.rstrip("/")
    return rel == top or rel.startswith(top + "/")


def _left_out(rel: str, path: Path, root: Path, rules: list[IgnoreRule], out_prefix: str,
              data: frozenset[str], delivered: dict[str, str], warnings: list[str]
              ) -> str | None:
    """Why ``rel`` is left out for a reason other than being a credential, or None."""
    if _is_junk(rel):
        return JUNK_WHY
    if out_prefix and _under(rel, out_prefix):
        return f"orch's outputs folder ({out_prefix}/)"
    if any(_under(rel, d) for d in data):
        return "shipped as --data"
    job = next((j for top, j in delivered.items() if _under(rel, top)), None)
    if job is not None:
        return f"delivered into the project by orch (job {job})"
    if rules and ignored(rel, rules):
        return "matched by .orchignore"
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(root):
            warnings.append(f"left out {rel}: it is a symlink to {target}, outside the "
                            "project; ship data from outside with --data")
            return "a symlink to outside the project"
        if target.is_dir():
            return "a symlinked folder (its files ship by their own paths)"
    return None


def sniffed(p: Plan) -> Plan:
    """``p`` (made with ``sniff=False``) with the files holding key material moved
    to ``excluded``."""
    keep: list[tuple[str, Path]] = []
    found: list[Excluded] = []
    for rel, path in p.files:
        why = why_by_content(path)
        if why is None:
            keep.append((rel, path))
        else:
            found.append(Excluded(rel, why, secret=True))
    return Plan(tuple(keep), tuple(sorted([*p.excluded, *found], key=lambda e: e.rel)),
                p.warnings)
