"""Learning curves of jobs, read without TensorFlow: for `orch compare` and `orch tensorboard`.

A job's curve is the per-epoch history its run wrote (:mod:`.curvelogs`):

- pulled: ``<dest>/logs/history.jsonl`` (and ``logs/fit-K/history.jsonl`` of later
  fits), beside the model;
- not pulled yet (running, failed, lost, sealed): the ``metrics.jsonl`` each attempt
  sends to the hub while it trains, the attempts' lines joined (a resumed attempt's
  epochs replace the ones the earlier attempt trained past its checkpoint).

Read-only: nothing here writes to the project or the hub.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import Project
from .curvelogs import HISTORY, LOGS
from .errors import JobNotFoundError, OrchError, UsageError
from .logs import get_logger
from .models import Job
from .store import Store

log = get_logger(__name__)

#: Keys of a history line that are not metrics.
NOT_METRICS = ("fit", "epoch", "time")
#: Words that make a metric better when higher (else lower is better: losses, errors).
HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "iou", "r2", "top_k",
                    "ndcg", "map")


@dataclass(frozen=True)
class Curve:
    """One job's learning curve: its per-epoch lines, in training order (a later
    fit's epochs after an earlier one's), and where they were read (``source``)."""

    job: Job
    rows: tuple[dict[str, float], ...]
    source: str

    @property
    def label(self) -> str:
        return f"{self.job.name} ({self.job.id})"

    def metrics(self) -> list[str]:
        """The metrics it has, in the order they first appear."""
        seen: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                if key not in NOT_METRICS:
                    seen.setdefault(key)
        return list(seen)

    def points(self, metric: str) -> list[tuple[int, float]]:
        """``(epoch number from 1, value)`` of each epoch that has ``metric``."""
        return [(i, row[metric]) for i, row in enumerate(self.rows, start=1) if metric in row]


@dataclass(frozen=True)
class Summary:
    """Best and final value of one metric of one curve; ``best_epoch`` counts from 1."""

    best: float
    best_epoch: int
    final: float
    epochs: int


def higher_is_better(metric: str) -> bool:
    """Accuracy-like metrics are best at their maximum; losses and errors at their
    minimum (``val_`` prefixes ignored)."""
    name = metric.lower().removeprefix("val_")
    return any(word in name for word in HIGHER_IS_BETTER)


def summarize(curve: Curve, metric: str) -> Summary | None:
    """None when the curve has no value of ``metric``."""
    points = curve.points(metric)
    if not points:
        return None
    pick = max if higher_is_better(metric) else min
    best_epoch, best = pick(points, key=lambda p: p[1])
    return Summary(best, best_epoch, points[-1][1], len(curve.rows))


def default_metric(curves: Sequence[Curve]) -> str:
    """``val_loss`` if any curve has it, else ``loss``, else the first metric there is."""
    have = [m for c in curves for m in c.metrics()]
    for metric in ("val_loss", "loss"):
        if metric in have:
            return metric
    if not have:
        raise UsageError("the curves have no metric")
    return have[0]


# ---- reading ----------------------------------------------------------------------


def parse_lines(text: str) -> list[dict[str, float]]:
    """The JSON object lines of ``text`` with their finite numbers (a line cut short
    by a killed run, or not an object, is skipped; NaN and infinities are left out)."""
    rows: list[dict[str, float]] = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append({k: float(v) for k, v in row.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v)})
    return rows


def merge(rows: Iterable[dict[str, float]]) -> list[dict[str, float]]:
    """Lines in the order written, where a line that goes back to an earlier or the
    same ``(fit, epoch)`` (a resumed attempt) replaces that one and what followed."""
    out: list[dict[str, float]] = []
    for row in rows:
        key = (row.get("fit", 0.0), row["epoch"])
        while out and (out[-1].get("fit", 0.0), out[-1]["epoch"]) >= key:
            out.pop()
        out.append(row)
    return out


def logs_dirs(project: Project, job: Job) -> list[Path]:
    """Where a pulled job's logs can be: each pulled ``logs`` folder, then
    ``models/NAME/logs``."""
    from .pull import default_dest

    found = [project.root / p for p in job.pulled_to if Path(p).name == LOGS]
    found.append(project.root / default_dest(project, job) / LOGS)
    return found


def pulled_history(project: Project, job: Job) -> Curve | None:
    """The history pulled beside the job's model, if it is there."""
    for folder in logs_dirs(project, job):
        files = [folder / HISTORY, *sorted(folder.glob(f"fit-*/{HISTORY}"),
                                           key=lambda p: _fit_number(p.parent.name))]
        files = [f for f in files if f.is_file()]
        if files:
            rows = [r for f in files for r in parse_lines(f.read_text(encoding="utf-8"))]
            rows.sort(key=lambda r: r.get("fit", 0.0))  # stable: each fit keeps its order
            rel = folder.relative_to(project.root) if folder.is_relative_to(project.root) \
                else folder
            return Curve(job, tuple(merge(rows)), f"{rel}/{HISTORY}")
    return None


def _fit_number(name: str) -> int:
    try:
        return int(name.removeprefix("fit-"))
    except ValueError:
        return 0


def hub_history(project: Project, job: Job) -> Curve | None:
    """The per-epoch metrics the job's attempts sent to its hub (a running job's
    curve so far); None when the hub has none or cannot be read."""
    from . import protocol as P
    from .errors import HubNotFound
    from .hubs import project_hub

    if job.worker_id is None and not job.started_at:
        return None  # never ran: no hub to ask
    try:
        hub = project_hub(project, job.hub)
        rows: list[dict[str, float]] = []
        for n in range(max(1, job.fresh_from), job.attempt + 1):
            try:
                rows += parse_lines(hub.get_bytes(P.metrics(job.id, n)).decode("utf-8",
                                                                             "replace"))
            except HubNotFound:
                continue
    except OrchError as exc:
        log.info("no curve from the hub for %s: %s", job.id, exc)
        return None
    return Curve(job, tuple(merge(rows)), f"the metrics on hub {job.hub}") if rows else None


def curve_of(project: Project, job: Job) -> Curve | None:
    """The job's curve: pulled beside its model, else what its hub has so far."""
    return pulled_history(project, job) or hub_history(project, job)


# ---- naming what to compare -----------------------------------------------------


def sweeps(store: Store) -> dict[float, list[tuple[str, tuple[tuple[str, str], ...]]]]:
    """Each sweep's jobs ``(id, axis values)``, by the time it was submitted."""
    groups: dict[float, list[tuple[str, tuple[tuple[str, str], ...]]]] = {}
    for job_id, at, combo in store.sweep_members():
        groups.setdefault(at, []).append((job_id, combo))
    return groups


def sweep_named(store: Store, name: str) -> list[Job]:
    """The jobs of the newest sweep submitted as ``name`` (its ``--name`` or script
    name: the jobs are ``NAME_axis=value…``); [] when there is none."""
    from .submit import sweep_name

    for members in reversed(list(sweeps(store).values())):
        jobs = [store.get(i) for i, _ in members]
        if all(j.name == sweep_name(name, combo) for j, (_, combo) in zip(jobs, members)):
            return jobs
    return []


def sweep_of(store: Store, job: Job) -> list[Job]:
    """Every job of the sweep ``job`` belongs to (UsageError if it is in none)."""
    for members in sweeps(store).values():
        if any(i == job.id for i, _ in members):
            return [store.get(i) for i, _ in members]
    raise UsageError(f"job {job.id} ({job.name}) is not part of a sweep")


def select(store: Store, refs: Sequence[str]) -> list[Job]:
    """The jobs ``refs`` name, in order, each once. A ref is a job (id, id prefix or
    name), a sweep's name (the newer wins when a job has the same name), or
    ``sweep:JOB`` (the whole sweep that job belongs to)."""
    chosen: dict[str, Job] = {}
    for ref in refs:
        for job in _select_one(store, ref.strip()):
            chosen.setdefault(job.id, job)
    return list(chosen.values())


def _select_one(store: Store, ref: str) -> list[Job]:
    if ref.startswith("sweep:"):
        return sweep_of(store, store.resolve(ref.removeprefix("sweep:")))
    try:
        job: Job | None = store.resolve(ref)
    except JobNotFoundError:
        job = None
    if job is not None and job.id.startswith(ref):
        return [job]
    group = sweep_named(store, ref) if ref else []
    if group and (job is None or max(j.seq for j in group) > job.seq):
        return group
    if job is not None:
        return [job]
    raise JobNotFoundError(f"no job or sweep matches {ref!r} (by id, id prefix, job name "
                           "or sweep name)")


# ---- TensorBoard ------------------------------------------------------------------


def tensorboard_runs(project: Project, store: Store) -> dict[str, Path]:
    """What `orch tensorboard` serves: run name → logs folder, in name order. Each
    pulled job's logs, named after the job (the newest job of a name first), then any
    other ``models/*/logs`` folder, named after its folder; a name already taken gets
    ``~N`` appended."""
    from .models import JobState

    runs: dict[str, Path] = {}

    def add(name: str, folder: Path) -> None:
        folder = folder.resolve()
        if folder in runs.values():
            return
        if "," in str(folder):  # TensorBoard's --logdir_spec separates runs with commas
            log.warning("left out %s: TensorBoard cannot take a path with a comma", folder)
            return
        runs[name if name not in runs else f"{name}~{len(runs)}"] = folder

    for job in store.jobs([JobState.PULLED], newest_first=True):
        folder = next((f for f in logs_dirs(project, job) if f.is_dir()), None)
        if folder is not None:
            add(job.name, folder)
    outputs = project.root / project.settings.outputs_dir.strip("/")
    for folder in sorted(outputs.glob(f"*/{LOGS}")):
        if folder.is_dir():
            add(folder.parent.name, folder)
    return dict(sorted(runs.items()))
