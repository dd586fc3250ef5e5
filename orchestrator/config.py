"""The project folder and its settings.

The project is the nearest folder, from the current directory upwards, holding
``pyproject.toml``, ``orch.toml`` or ``.orch/`` (like git finds its repository).
Settings come from ``[tool.orch]`` in ``pyproject.toml`` or the top level (or an
``[orch]`` table) of ``orch.toml``, then ``ORCH_*`` environment variables win.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ProjectError, UsageError
from .logs import get_logger
from .models import parse_duration

log = get_logger(__name__)

MARKERS = ("pyproject.toml", "orch.toml", ".orch")
STATE_DIR = ".orch"


@dataclass(frozen=True)
class Settings:
    """Effective settings of one project. Every field can be set in the project's
    config file under the same name, or by ``ORCH_<NAME>`` in the environment."""

    local_slots: int | None = None  # CPU worker slots; None → one if no GPU found
    gpus: str = "auto"  # "auto" (nvidia-smi), "none", or "0,1"
    daemon_idle_timeout: float = 300.0  # daemon exits after this long with nothing to do
    worker_idle_timeout: float = 60.0  # a local worker exits after this long idle
    auto_pull: bool = True
    outputs_dir: str = "models"
    hub: str = ""  # the project's remote hub, e.g. "drive:orch-hub/myproject" ("" = none)
    drive_client_secrets: str = "client_secrets.json"  # your OAuth client (for `orch auth`)
    drive_credentials: str = ""  # "" → .orch/drive-credentials.json (written by `orch auth`)
    drive_shared_drive: str = ""  # a Shared Drive id to keep the hub in
    drive_scope: str = "drive"  # what `orch auth` asks for: "drive" or "drive.file"
    drive_poll_interval: float = 2.0  # how stale a Drive hub's view may get
    drive_url: str = ""  # the Drive API endpoint ("" = Google's; `orch sandbox use` sets it)
    heartbeat_interval: float = 1.0
    lease_ttl: float = 20.0  # a local worker silent this long loses its job
    remote_lease_ttl: float = 300.0  # the same for workers on a remote hub (Drive lags)
    tick_interval: float = 1.0  # daemon polls at least this often
    max_snapshot_mb: float = 200.0
    placement: str = "finish-first"  # or any-free, round-robin, rule, local (comparisons)
    upload_rate: float = 5e6  # bytes/s to a remote hub, for placement's transfer times
    gpu_jobs: int | None = None  # most jobs a local GPU runs at once (None: 4)
    colab_workers: int | None = None  # Colab sessions orch may launch itself (None: none)
    colab_gpu: str = "T4"  # the GPU those sessions ask for
    colab_startup: float = 180.0  # how long a launched Colab session takes to join
    # a job lost to this many Colab session ends fails with that reason (0: never)
    session_loss_limit: int | None = 3
    colab_cli: str = "colab"  # the command (or path) of Google's colab CLI that launches them
    host_min_free_mb: float = 1024.0  # an SSH host with less free disk takes no work
    host_retry: float = 30.0  # seconds between tries to reach an SSH host or Ray head
    unreachable_lease_ttl: float = 3600.0  # a worker on a hub out of reach keeps its jobs
    # when a job ends, `orch top` and `--wait` also ring the terminal bell and show a
    # desktop notification (notify-send on Linux, osascript on macOS; none: no matter)
    notify: bool = False


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
#: The float settings that are durations (seconds; written like 30s, 5m, 1h).
DURATIONS = frozenset(n for n in _FIELDS if n.endswith(("_timeout", "_interval", "_ttl"))
                      ) | {"colab_startup", "host_retry"}
FILES = ("pyproject.toml", "orch.toml")  # read in this order: orch.toml wins


def _expected(name: str) -> str:
    """What a value of setting ``name`` looks like, for error messages."""
    kind = _FIELDS[name].type
    if kind == "bool":
        return "true or false"
    if kind == "int | None":
        return "a whole number >= 0, or auto"
    if name in DURATIONS:
        return "a duration like 30s, 5m or 1h"
    if kind == "float":
        return "a number >= 0"
    return "text"


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELDS[name].type
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind == "int | None":
            if value in (None, "", "auto"):
                return None
            number = float(value)
            if not number.is_integer() or number < 0:
                raise ValueError(value)
            return int(number)
        if kind == "float":
            seconds = parse_duration(str(value), name) if isinstance(value, str) else float(value)
            if seconds < 0:
                raise ValueError(value)
            return seconds
        return str(value)
    except (ValueError, UsageError) as exc:
        raise UsageError(f"setting {name}: bad value {value!r} (expected "
                         f"{_expected(name)})") from exc


def find_root(start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` with a project marker, or None."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / m).exists() for m in MARKERS):
            return folder
    return None


def _read_tables(root: Path, found: list[Path]) -> dict[str, Any]:
    import tomllib


    table: dict[str, Any] = {}
    for path in found:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ProjectError(f"cannot read {path}: it is not UTF-8 text (save it as "
                               "UTF-8)") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ProjectError(f"cannot read {path}: {exc}") from exc
        if path.name == "pyproject.toml":
            table.update(data.get("tool", {}).get("orch", {}))
        else:
            table.update(data.get("orch", data))
    return table


def _file_settings(root: Path) -> dict[str, Any]:
    """The raw ``[tool.orch]`` / ``orch.toml`` values. Parsed tables are cached in
    ``.orch/settings-cache.json`` while the files' sizes and mtimes are unchanged:
    importing tomllib costs more than the rest of `orch status`."""
    found = [root / n for n in FILES if (root / n).is_file()]
    key = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in found]
    cache = root / STATE_DIR / "settings-cache.json"
    try:
        cached = json.loads(cache.read_text())
        if cached["files"] == key:
            return dict(cached["table"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    table = _read_tables(root, found)
    if cache.parent.is_dir():
        from .atomic import write_atomic

        try:
            write_atomic(cache, json.dumps({"files": key, "table": table}))
        except (OSError, TypeError, ValueError):  # a read-only project, or odd values
            pass
    return table


def load_settings(root: Path, environ: dict[str, str] | None = None) -> Settings:
    """Settings of the project at ``root``: file values, then ``ORCH_*`` overrides.
    Unknown keys are an error, so a typo does not silently do nothing."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for key, value in _file_settings(root).items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            raise UsageError(f"unknown setting {key!r} in {root} (known: {', '.join(_FIELDS)})")
        try:
            values[name] = _coerce(name, value)
        except UsageError as exc:
            raise UsageError(f"{root / _file_of(root, key)}: {exc}") from None
    for name in _FIELDS:
        var = "ORCH_" + name.upper()
        raw = env.get(var)
        if raw is not None:
            try:
                values[name] = _coerce(name, raw)
            except UsageError as exc:
                raise UsageError(f"${var}: {exc}") from None
    return Settings(**values)


def _file_of(root: Path, key: str) -> str:
    """The config file that sets ``key`` (the last of FILES that does)."""
    found = [n for n in FILES if (root / n).is_file() and key in _read_tables(root, [root / n])]
    return found[-1] if found else FILES[-1]


def setting_origins(root: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Where each setting's effective value comes from, as :func:`load_settings` reads
    it: ``env ORCH_NAME``, ``orch.toml``, ``pyproject.toml`` (its ``[tool.orch]``), or
    ``default``. (orch has no per-user settings file, and no command line sets these.)
    Reads the files again: for `orch config`, not for hot paths."""
    env = os.environ if environ is None else environ
    origins = dict.fromkeys(_FIELDS, "default")
    for name in FILES:
        if (root / name).is_file():
            for key in _read_tables(root, [root / name]):
                if key.replace("-", "_") in origins:
                    origins[key.replace("-", "_")] = name
    for field in _FIELDS:
        if "ORCH_" + field.upper() in env:
            origins[field] = "env ORCH_" + field.upper()
    return origins


@dataclass(frozen=True)
class Project:
    """A project folder and where its state lives. Paths are absolute."""

    root: Path
    settings: Settings

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def hub_dir(self) -> Path:
        return self.state_dir / "hub"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"

    @property
    def hub_url(self) -> str:
        """The local folder hub (local workers, and the blob store of submit)."""
        return str(self.hub_dir)

    @property
    def remote_hub_url(self) -> str:
        """The ``hub`` setting, with ``drive`` alone meaning ``drive:orch-hub/<project>``."""
        hub = self.settings.hub.strip()
        if hub in ("drive", "drive:"):
            return f"drive:orch-hub/{self.root.name}"
        return hub

    @property
    def drive_url(self) -> str | None:
        """The Drive endpoint: $ORCH_DRIVE_ROOT_URL, else the ``drive_url`` setting,
        else None (Google's)."""
        return os.environ.get("ORCH_DRIVE_ROOT_URL") or self.settings.drive_url or None

    @property
    def drive_credentials(self) -> Path:
        given = self.settings.drive_credentials
        return (self.root / given) if given else self.state_dir / "drive-credentials.json"

    @property
    def drive_client_secrets(self) -> Path:
        return (self.root / self.settings.drive_client_secrets).expanduser()

    @property
    def outputs_dir(self) -> Path:
        return self.root / self.settings.outputs_dir

    def exists(self) -> bool:
        return self.state_dir.is_dir()

    def init(self) -> bool:
        """Create ``.orch/`` (private to its owner: it holds the store, credentials and
        the signing key), its folders, the project's identity, and the local hub's
        ``hub.json``. Idempotent; True if it was new."""
        new = not self.state_dir.is_dir()
        self.state_dir.mkdir(mode=0o700, exist_ok=True)
        if self.state_dir.stat().st_mode & 0o077:
            os.chmod(self.state_dir, 0o700)  # made before orch kept it private
        for folder in (self.hub_dir, self.logs_dir, self.work_dir):
            folder.mkdir(parents=True, exist_ok=True)
        ignore = self.state_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n")
        if not (self.hub_dir / "hub.json").exists():
            from .hubs import claim_hub, open_hub
            from .identity import load_identity

            claim_hub(open_hub(self.hub_url), load_identity(self.state_dir).project_id)
        return new


def refuse_as_root(root: Path) -> str | None:
    """Why ``root`` should not silently become a project (home folder, ``/``)."""
    if root == Path(root.anchor):
        return f"{root} is the file system's root"
    if root == Path.home().resolve():
        return f"{root} is your home folder"
    return None


def find_project(start: Path | None = None) -> Project:
    """The project around ``start`` (default: cwd): the nearest folder with a project
    marker; nothing is created. ProjectError when there is none, or when the nearest
    is the home folder or ``/`` without ``.orch/``: orch never turns a folder into a
    project silently (`orch init` does that)."""
    here = (start or Path.cwd()).resolve()
    root = find_root(here)
    if root is None:
        raise ProjectError(f"no orch project at or above {here}: run `orch init` in your "
                           "project's folder first")
    refused = refuse_as_root(root)
    if refused and not (root / STATE_DIR).is_dir():
        raise ProjectError(f"{refused}, not a project: run `orch init` in your project's "
                           "own folder")
    return Project(root, load_settings(root))


def open_project(start: Path | None = None, create: bool = False) -> Project:
    """:func:`find_project`; with ``create`` it gets its ``.orch/`` if it lacks one,
    without, ``.orch/`` must exist."""
    project = find_project(start)
    if create:
        project.init()
    elif not project.exists():
        raise ProjectError(f"{project.root} has no .orch/ yet: run `orch init` first")
    return project
