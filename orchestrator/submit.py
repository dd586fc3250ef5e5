"""`orch submit`: validate everything, snapshot, store the job(s), wake the daemon.

Contract: every check runs before anything is stored; a rejected submit leaves
no job and no event. All jobs of a sweep are stored in one transaction.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .bundle import BlobStore, add_data, take_snapshot
from .config import Project
from .errors import BundleError, NotConfiguredError, UsageError
from .logs import get_logger
from .models import GpuNeed, Job, JobSpec, OutputSpec, parse_duration
from .store import Store

log = get_logger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SWEEP_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
KNOWN_TARGETS = "local, remote, auto, colab or ssh:HOST"


@dataclass(frozen=True)
class SubmitRequest:
    """The raw command-line values of one `orch submit`."""

    script: str
    script_args: tuple[str, ...] = ()
    name: str | None = None
    on: str = "local"
    gpu: GpuNeed = GpuNeed.ANY
    estimate: str | None = None
    priority: int = 0
    data: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    sweep: tuple[str, ...] = ()
    autotrack: bool = False


def parse_target(on: str, remote_hub: str = "") -> str:
    target = on.strip().lower()
    if target in ("local", "auto"):
        return target
    if target == "remote":
        if not remote_hub:
            raise NotConfiguredError(
                "--on remote: no remote hub is configured for this project: set "
                "hub = \"drive\" in its settings and run `orch auth`")
        return target
    if target == "colab":
        if not remote_hub:
            raise NotConfiguredError(
                "--on colab: Colab is not configured for this project (it needs a Drive hub): "
                "set hub = \"drive\" in its settings and run `orch auth`")
        return target
    if target.startswith("ssh:"):
        host = target[4:]
        if not host:
            raise UsageError("--on ssh:HOST needs a host name")
        raise NotConfiguredError(f"--on {on}: SSH host {host!r} is not configured")
    raise UsageError(f"unknown --on {on!r}: use {KNOWN_TARGETS}")


def parse_env(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise UsageError(f"bad --env {item!r}: use NAME=VALUE")
        out.append((key, value))
    return tuple(out)


def parse_sweep(items: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        choices = [v.strip() for v in values.split(",")]
        if not sep or not _SWEEP_KEY.match(key) or not all(choices):
            raise UsageError(f"bad --sweep {item!r}: use NAME=V1,V2,… (e.g. lr=0.1,0.01)")
        if any(k == key for k, _ in axes):
            raise UsageError(f"--sweep {key} given twice")
        axes.append((key, choices))
    return axes


def _relative_clean(text: str, what: str) -> str:
    path = Path(text)
    if path.is_absolute() or ".." in path.parts:
        raise UsageError(f"bad {what} {text!r}: must be a relative path without '..'")
    return path.as_posix()


def parse_outputs(items: tuple[str, ...]) -> tuple[OutputSpec, ...]:
    out: list[OutputSpec] = []
    for item in items:
        src, sep, dest = item.partition(":")
        if not src or (sep and not dest):
            raise UsageError(f"bad --output {item!r}: use SRC or SRC:DEST (e.g. model.h5:.)")
        src_c = _relative_clean(src, "--output source")
        dest_c = _relative_clean(dest, "--output destination") if sep else ""
        out.append(OutputSpec(src=src_c, dest=dest_c))
    return tuple(out)


def resolve_script(project_root: Path, script: str) -> str:
    path = Path(script).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    path = path.resolve()
    if not path.exists():
        raise UsageError(f"script {script} not found")
    if not path.is_file():
        raise UsageError(f"script {script} is not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"script {script} is not readable")
    if not path.is_relative_to(project_root):
        raise UsageError(f"script {script} is outside the project {project_root}")
    return path.relative_to(project_root).as_posix()


def _uses_orch_callbacks(script: Path) -> bool:
    """Does the script checkpoint with orch's Keras callbacks (so it can resume)?"""
    try:
        return "orchestrator.keras" in script.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def sweep_name(base: str, combo: tuple[tuple[str, str], ...]) -> str:
    """``train`` + ``(lr, 0.1), (cfg, configs/a.yaml)`` → ``train_lr=0.1_cfg=configs_a.yaml``:
    a name that is safe as a folder name (it becomes models/<name>/)."""
    def clean(value: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", value).replace("..", "_").strip("._") or "_"

    return "_".join([base, *(f"{k}={clean(v)}" for k, v in combo)])


def submit(project: Project, req: SubmitRequest, store: Store | None = None) -> list[Job]:
    """Check, snapshot and store the request's job(s). Returns them, QUEUED."""
    target = parse_target(req.on, project.settings.hub)
    script = resolve_script(project.root, req.script)
    estimate = parse_duration(req.estimate, "--estimate") if req.estimate else None
    env = parse_env(req.env)
    axes = parse_sweep(req.sweep)
    outputs = parse_outputs(req.outputs)
    base = Path(script).stem if req.name is None else req.name
    if not _NAME.match(base) or ".." in base:
        raise UsageError(f"bad --name {base!r}: use letters, digits, '.', '_', '-'")
    for given in req.data:
        if not Path(given).expanduser().exists():
            raise BundleError(f"data path {given} does not exist")
    project.init()
    blobs = BlobStore(project.hub_dir / "blobs")
    data = tuple(add_data(project.root, blobs, d) for d in req.data)
    exclude = {d.path for d in data}
    if script in exclude:
        raise UsageError(f"script {script} cannot also be --data")
    snap, size, names = take_snapshot(project.root, blobs, exclude, project.settings.outputs_dir,
                                      project.settings.max_snapshot_mb,
                                      cache=project.state_dir / "snapshot-cache.json")
    log.info("snapshot %s: %d files, %d bytes", snap[:12], len(names), size)
    if script not in names:
        raise UsageError(f"script {script} is excluded from the snapshot (ignored by git, "
                         ".orchignore, or orch's credential rules)")
    checkpoints = req.autotrack or _uses_orch_callbacks(project.root / script)
    combos = list(itertools.product(*[[(k, v) for v in values] for k, values in axes])) or [()]
    specs = []
    for combo in combos:
        args = list(req.script_args)
        for key, value in combo:
            args += [f"--{key}", value]
        specs.append(JobSpec(
            name=sweep_name(base, combo) if combo else base, script=script, args=tuple(args),
            target=target, gpu=req.gpu, priority=req.priority, estimate_s=estimate,
            snapshot_sha256=snap, data=data, outputs=outputs, env=env,
            autotrack=req.autotrack, sweep=combo, checkpoints=checkpoints,
        ))
    own = store is None
    db = store or Store(project.db_path)
    try:
        return db.insert_jobs(specs)
    finally:
        if own:
            db.close()
