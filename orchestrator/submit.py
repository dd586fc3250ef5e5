"""`orch submit`: validate everything, snapshot, store the job(s), wake the daemon.

Contract: every check runs before anything is stored; a rejected submit leaves
no job and no event. All jobs of a sweep are stored in one transaction.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from . import snapshot
from .bundle import BlobStore, add_data, take_snapshot
from .config import Project
from .errors import BundleError, NotConfiguredError, UsageError
from .logs import get_logger
from .models import GpuNeed, Job, JobSpec, OutputSpec, parse_duration
from .snapshot import Plan
from .store import Store

log = get_logger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SWEEP_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
KNOWN_TARGETS = "local, remote, auto, colab, ssh:HOST or ray:CLUSTER"
#: Bounds on what one submit may ask (checked before anything is stored).
MAX_NAME = 100  # a job's name becomes a folder name (models/NAME/)
MAX_PRIORITY = 1_000_000
MAX_ESTIMATE = 30 * 86400.0  # a month: longer is a typo
MAX_JOBS = 1000  # per submit (a sweep)


@dataclass(frozen=True)
class SubmitRequest:
    """The raw command-line values of one `orch submit`."""

    script: str
    script_args: tuple[str, ...] = ()
    name: str | None = None
    on: str = "auto"
    gpu: GpuNeed = GpuNeed.ANY
    estimate: str | None = None
    priority: int = 0
    data: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    sweep: tuple[str, ...] = ()
    autotrack: bool = False
    gpu_mem: str | None = None  # MB of GPU memory the job needs, to share a GPU
    pip: tuple[str, ...] = ()  # --pip: requirements, or wheel/sdist paths in the project
    requirements: str | None = None  # --requirements: a requirements file in the project


def parse_target(on: str, remote_hub: str = "", named: frozenset[str] = frozenset()) -> str:
    """The ``--on`` target, checked; ``named``: the configured ``ssh:HOST`` and
    ``ray:CLUSTER`` targets."""
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
    kind, sep, name = target.partition(":")
    if sep and kind in ("ssh", "ray"):
        what, add = (("SSH host", "orch hosts add {} user@address") if kind == "ssh" else
                     ("Ray cluster", "orch clusters add {} http://HEAD:8265 --hub folder:PATH"))
        if not name:
            raise UsageError(f"--on {kind}:NAME needs the name of a configured {what}")
        if target in named:
            return target
        known = ", ".join(sorted(n.partition(":")[2] for n in named
                                 if n.startswith(kind + ":"))) or "none"
        raise NotConfiguredError(f"--on {on}: {what} {name!r} is not configured (known: "
                                 f"{known}); add it with `{add.format(name)}`")
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


def _project_file(project_root: Path, given: str, what: str) -> str:
    path = Path(given).expanduser()
    path = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not path.is_file():
        raise UsageError(f"{what} {given}: no such file")
    if not path.is_relative_to(project_root):
        raise UsageError(f"{what} {given} is outside the project {project_root} (it must "
                         "ship in the job's snapshot)")
    return path.relative_to(project_root).as_posix()


def parse_packages(project_root: Path, pip: tuple[str, ...],
                   requirements: str | None) -> tuple[str, ...]:
    """The job's package items (see :mod:`.packages`): each ``--pip`` requirement as
    given (checked with ``packaging``), each wheel/sdist path and the requirements
    file as project paths (``-r PATH`` for the file)."""
    from packaging.requirements import InvalidRequirement, Requirement

    from .packages import is_path

    items: list[str] = []
    for spec in pip:
        spec = spec.strip()
        if spec.startswith("-") or not spec:
            raise UsageError(f"bad --pip {spec!r}: a requirement (e.g. einops==0.8.0) or a "
                             "wheel/sdist in the project; pip options go in a --requirements "
                             "file")
        if is_path(spec):
            items.append(_project_file(project_root, spec, "--pip"))
            continue
        try:
            Requirement(spec)
        except InvalidRequirement as exc:
            reason = str(exc).splitlines()[0]  # packaging adds the spec and a caret below
            raise UsageError(f"bad --pip {spec!r}: {reason}") from None
        items.append(spec)
    if requirements is not None:
        items.append("-r " + _project_file(project_root, requirements, "--requirements"))
    return tuple(items)


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


@dataclass(frozen=True)
class _Checked:
    """A request whose every value was checked; nothing stored yet."""

    target: str
    script: str
    estimate: float | None
    gpu_mem: float | None
    env: tuple[tuple[str, str], ...]
    axes: list[tuple[str, list[str]]]
    outputs: tuple[OutputSpec, ...]
    base: str
    packages: tuple[str, ...] = ()


def _named_places(project: Project, on: str) -> frozenset[str]:
    """The project's ``ssh:HOST`` / ``ray:CLUSTER`` targets (read only when a job
    names one)."""
    kind = on.strip().lower().partition(":")[0]
    if kind == "ssh":
        from .hosts import Hosts

        return frozenset(f"ssh:{h.name}" for h in Hosts(project.state_dir).all())
    if kind == "ray":
        from .clusters import Clusters

        return frozenset(f"ray:{c.name}" for c in Clusters(project.state_dir).all())
    return frozenset()


def _check(project: Project, req: SubmitRequest) -> _Checked:
    """Every value of the request, checked: UsageError (exit 2, one line) for the
    first that is wrong. Nothing is read beyond the script and data paths."""
    target = parse_target(req.on, project.settings.hub, _named_places(project, req.on))
    script = resolve_script(project.root, req.script)
    estimate = parse_duration(req.estimate, "--estimate") if req.estimate else None
    if estimate is not None and not 1 <= estimate <= MAX_ESTIMATE:
        raise UsageError(f"bad --estimate {req.estimate!r}: between 1s and 30 days")
    gpu_mem = None
    if req.gpu_mem is not None:
        try:
            gpu_mem = float(req.gpu_mem)
        except ValueError:
            gpu_mem = -1.0
        if not 1 <= gpu_mem <= 1e6:
            raise UsageError(f"bad --gpu-mem {req.gpu_mem!r}: megabytes, e.g. 2000")
    if abs(req.priority) > MAX_PRIORITY:
        raise UsageError(f"bad --priority {req.priority}: between -{MAX_PRIORITY:,} and "
                         f"{MAX_PRIORITY:,}")
    env = parse_env(req.env)
    from .packages import ENV

    if any(k == ENV for k, _ in env):
        raise UsageError(f"--env {ENV}=… is orch's: declare packages with --pip or "
                         "--requirements")
    packages = parse_packages(project.root, req.pip, req.requirements)
    if packages:
        import json

        env += ((ENV, json.dumps(packages)),)
    axes = parse_sweep(req.sweep)
    combos = 1
    for _, values in axes:
        combos *= len(values)
    if combos > MAX_JOBS:
        raise UsageError(f"--sweep makes {combos:,} jobs; at most {MAX_JOBS:,} per submit")
    outputs = parse_outputs(req.outputs)
    base = Path(script).stem if req.name is None else req.name
    if not _NAME.match(base) or ".." in base:
        raise UsageError(f"bad --name {base!r}: use letters, digits, '.', '_', '-'")
    def width(key: str, value: str) -> int:
        return len(sweep_name("", ((key, value),)))

    # the longest name a combination of the axes' values can get
    widest = tuple((k, max(vs, key=partial(width, k))) for k, vs in axes)
    longest = len(sweep_name(base, widest)) if widest else len(base)
    if longest > MAX_NAME:
        raise UsageError(f"job name too long ({longest} characters, at most {MAX_NAME}): "
                         "give a shorter --name")
    for given in req.data:
        if not Path(given).expanduser().exists():
            raise BundleError(f"data path {given} does not exist")
    return _Checked(target, script, estimate, gpu_mem, env, axes, outputs, base, packages)


def credential_paths(project: Project) -> frozenset[str]:
    """orch's own configured credential files that lie inside the project, as project
    paths: never shipped, whatever their name."""
    found = set()
    for path in (project.drive_credentials, project.drive_client_secrets):
        resolved = path.resolve()
        if resolved.is_relative_to(project.root):
            found.add(resolved.relative_to(project.root).as_posix())
    return frozenset(found)


def _data_paths(project: Project, given: tuple[str, ...]) -> frozenset[str]:
    """Where each ``--data`` path lands in the job's working dir (see add_data)."""
    out = set()
    for g in given:
        path = Path(g).expanduser()
        path = (Path.cwd() / path).resolve() if not path.is_absolute() else path.resolve()
        out.add(path.relative_to(project.root).as_posix()
                if path.is_relative_to(project.root) else path.name)
    return frozenset(out)


def _plan(project: Project, data: frozenset[str], delivered: dict[str, str],
          sniff: bool) -> Plan:
    return snapshot.plan(project.root, data, project.settings.outputs_dir,
                         credential_paths(project), delivered, sniff=sniff)


def preview(project: Project, req: SubmitRequest) -> Plan:
    """`orch submit --dry-run`: check the request and say what its snapshot would
    hold and why each other file is left out. Writes nothing."""
    checked = _check(project, req)
    delivered: dict[str, str] = {}
    if project.db_path.is_file():
        with Store(project.db_path) as db:
            delivered = db.deliveries()
    listed = _plan(project, _data_paths(project, req.data), delivered, sniff=True)
    if checked.script not in {name for name, _ in listed.files}:
        why = next((e.why for e in listed.excluded if e.rel == checked.script), "excluded")
        raise UsageError(f"script {checked.script} would not ship: {why}")
    return listed


def submit(project: Project, req: SubmitRequest, store: Store | None = None) -> list[Job]:
    """Check, snapshot and store the request's job(s). Returns them, QUEUED."""
    c = _check(project, req)
    project.init()
    own = store is None
    db = store or Store(project.db_path)
    try:
        blobs = BlobStore(project.hub_dir / "blobs")
        data = tuple(add_data(project.root, blobs, d) for d in req.data)
        shipped_as_data = frozenset(d.path for d in data)
        if c.script in shipped_as_data:
            raise UsageError(f"script {c.script} cannot also be --data")
        listed = _plan(project, shipped_as_data, db.deliveries(), sniff=False)
        snap, size, final = take_snapshot(blobs, listed, project.settings.max_snapshot_mb,
                                          cache=project.state_dir / "snapshot-cache.json")
        for warning in final.warnings:
            log.warning("%s", warning)
        if final.credentials:
            names = ", ".join(e.rel for e in final.credentials[:4])
            more = " …" if len(final.credentials) > 4 else ""
            log.warning("left %d credential file(s) out of the snapshot: %s%s (`orch submit "
                        "--dry-run` shows why)", len(final.credentials), names, more)
        log.info("snapshot %s: %d files, %d bytes", snap[:12], len(final.files), size)
        if c.script not in {name for name, _ in final.files}:
            why = next((e.why for e in final.excluded if e.rel == c.script), "excluded")
            raise UsageError(f"script {c.script} is excluded from the snapshot: {why}")
        from .packages import is_path

        shipped = {name for name, _ in final.files}
        for item in c.packages:
            rel = item.removeprefix("-r ")
            if (item.startswith("-r ") or is_path(item)) and rel not in shipped:
                why = next((e.why for e in final.excluded if e.rel == rel), "excluded")
                raise UsageError(f"package file {rel} is not in the snapshot: {why}")
        checkpoints = req.autotrack or _uses_orch_callbacks(project.root / c.script)
        combos = (list(itertools.product(*[[(k, v) for v in values] for k, values in c.axes]))
                  or [()])
        specs = []
        for combo in combos:
            args = list(req.script_args)
            for key, value in combo:
                args += [f"--{key}", value]
            specs.append(JobSpec(
                name=sweep_name(c.base, combo) if combo else c.base, script=c.script,
                args=tuple(args), target=c.target, gpu=req.gpu, priority=req.priority,
                estimate_s=c.estimate, snapshot_sha256=snap, data=data, outputs=c.outputs,
                env=c.env, autotrack=req.autotrack, sweep=combo, checkpoints=checkpoints,
                gpu_mem_mb=c.gpu_mem,
            ))
        return db.insert_jobs(specs)
    finally:
        if own:
            db.close()
