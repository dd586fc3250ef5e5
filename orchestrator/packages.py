"""Extra Python packages a job declares, installed by the worker once per requirement set.

A job declares them with ``orch submit --pip SPEC`` (repeatable: a requirement such
as ``einops==0.8.0``, or the path of a wheel/sdist inside the project, which then
ships in the snapshot) and/or ``--requirements FILE`` (a requirements file inside
the project, shipped in the snapshot). A ``requirements.txt`` is never picked up
on its own: a project's usual one lists TensorFlow itself, which Colab has.

The set travels to the worker as the job's environment variable
:data:`ENV` (a JSON list: each ``--pip`` item, then ``-r FILE``), so it needs no
new field in the store, and the script can read what it asked for.

On the worker (:func:`install`, standard library only: it runs in Colab) the set
is keyed by the sha256 of its items and of the content of each file it names
(wheels, requirements files), and installed with ``pip install --target`` into
``WORK/packages/pyXY-KEY/`` (``WORK``: the worker's ``--work-dir``, which outlives
the worker: a Colab session's later workers reuse it; ``XY``: this Python's version).
The folder is renamed into place only when pip succeeded (from a partial folder of
this worker's own), so a cached folder is always a whole install; a second job with
the same set reuses it. Installs are serialised per worker (two slots asking for one
set install it once); two workers racing on one set both install, the first rename
wins. Dependencies that the worker's own Python
already has are removed from the target unless the job named them, so the job
keeps the environment's TensorFlow and NumPy (``--target`` ignores what is
installed and would otherwise shadow them). The folder goes first on the job's
``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import OrchError

ENV = "ORCH_REQUIREMENTS"
ARCHIVES = (".whl", ".tar.gz", ".zip", ".tar.bz2")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_LOCK = threading.Lock()
log = logging.getLogger(__name__)


class PackagesError(OrchError):
    """The job's packages could not be installed (pip's last lines are in the message)."""


@dataclass(frozen=True)
class Installed:
    """A requirement set ready to use: its folder, key, and whether it was cached."""

    path: Path
    key: str
    cached: bool


def is_path(item: str) -> bool:
    """A ``--pip`` item naming a file (a wheel or sdist), not a requirement."""
    return item.endswith(ARCHIVES) or "/" in item or os.sep in item


def normalize(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def items_of(env: tuple[tuple[str, str], ...]) -> list[str]:
    """The job's requirement items from its environment ([] when it declared none)."""
    for key, value in env:
        if key == ENV:
            try:
                items = json.loads(value)
            except ValueError:
                items = None
            if isinstance(items, list) and all(isinstance(i, str) for i in items):
                return items
            raise PackagesError(f"${ENV} is not a JSON list of strings")
    return []


def _file_of(item: str, src: Path) -> Path | None:
    rel = item[3:] if item.startswith("-r ") else item
    if not (item.startswith("-r ") or is_path(item)):
        return None
    path = (src / rel).resolve()
    if not path.is_relative_to(src.resolve()):
        raise PackagesError(f"package file {rel} leaves the job's working dir")
    if not path.is_file():
        raise PackagesError(f"package file {rel} is not in the job's snapshot")
    return path


def key_of(items: list[str], src: Path) -> str:
    """sha256 of the items and of the content of every file they name."""
    parts = []
    for item in items:
        path = _file_of(item, src)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path else ""
        parts.append([item, digest])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def named(items: list[str], src: Path) -> set[str]:
    """Normalised names of the distributions the job asked for by name or file."""
    names: set[str] = set()
    lines: list[str] = []
    for item in items:
        if item.startswith("-r "):
            path = _file_of(item, src)
            if path is not None:
                lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        elif is_path(item):
            base = Path(item).name
            names.add(normalize(base.split("-")[0] if base.endswith(".whl")
                                else base.rsplit("-", 1)[0]))
        else:
            lines.append(item)
    for line in lines:
        match = _NAME.match(line) if not line.lstrip().startswith(("-", "#")) else None
        if match:
            names.add(normalize(match.group(1)))
    return names


def _prune(target: Path, keep: set[str]) -> list[str]:
    """Remove from ``target`` the distributions this Python already has and the job
    did not name. Returns their names."""
    removed = []
    for info in sorted(target.glob("*.dist-info")):
        meta = info / "METADATA"
        name = next((ln.split(":", 1)[1].strip() for ln in
                     meta.read_text(encoding="utf-8", errors="replace").splitlines()
                     if ln.startswith("Name:")), "") if meta.is_file() else ""
        if not name or normalize(name) in keep:
            continue
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        record = info / "RECORD"
        for line in (record.read_text().splitlines() if record.is_file() else []):
            path = (target / line.split(",")[0]).resolve()
            if path.is_relative_to(target.resolve()) and path.is_file():
                path.unlink()
        shutil.rmtree(info, ignore_errors=True)
        removed.append(name)
    for folder in sorted((p for p in target.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


def pip_args(items: list[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        out += ["-r", item[3:]] if item.startswith("-r ") else [item]
    return out


def install(items: list[str], src: Path, cache: Path, say: Callable[[str], None]) -> Installed:
    """Install ``items`` (relative files resolved in ``src``) under ``cache``, or
    reuse an earlier install of the same set. Idempotent; PackagesError with pip's
    last lines when pip fails (nothing is cached then)."""
    key = key_of(items, src)
    # per Python: workers of another interpreter on the same machine install their own
    target = cache / f"py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    with _LOCK:
        if target.is_dir():
            say(f"using cached packages {key[:12]} ({' '.join(items)})")
            return Installed(target, key, cached=True)
        say(f"installing packages {key[:12]}: {' '.join(items)}")
        partial = cache / f".{target.name}.{os.getpid()}.partial"  # this worker's alone
        shutil.rmtree(partial, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--target", str(partial), "--no-input",
             "--disable-pip-version-check", "--progress-bar", "off", *pip_args(items)],
            cwd=src, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines()
                     if ln.strip()]
            raise PackagesError(f"pip could not install the job's packages ({' '.join(items)}; "
                                f"exit {proc.returncode}): " + " | ".join(lines[-3:]))
        removed = _prune(partial, named(items, src))
        if removed:
            say(f"kept this Python's own {', '.join(sorted(removed))}")
        try:
            os.replace(partial, target)
        except OSError:  # another worker of this machine installed the same set first
            if not target.is_dir():
                raise
            shutil.rmtree(partial, ignore_errors=True)
        say(f"installed packages {key[:12]}")
        return Installed(target, key, cached=False)


def tensorflow_version(env: dict[str, str], cwd: Path) -> str | None:
    """The TensorFlow version the job's environment has (importlib.metadata, in a
    child Python with ``env``: TensorFlow is never imported here), or None."""
    code = ("import importlib.metadata as m\n"
            "for n in ('tensorflow', 'tensorflow-cpu', 'tf-nightly'):\n"
            "    try:\n        print(m.version(n)); break\n"
            "    except m.PackageNotFoundError:\n        pass\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = proc.stdout.strip()
    return version or None


def job_log_writer(log_path: Path, prefix: str) -> Callable[[str], None]:
    """A ``say`` for :func:`install`: each message goes to the job's log (as an
    ``[orch]`` line) and to the worker's log (prefixed with ``prefix``)."""
    def say(message: str) -> None:
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(f"[orch] {message}\n")
        log.info("%s %s", prefix, message)

    return say
