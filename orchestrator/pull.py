"""Bring sealed results into the project: download, verify, extract, place.

Contract: either every output of a job lands in place or none does, and a
half-written model never appears at its destination. Work happens in
``.orch/staging/`` (same filesystem as the project), each top-level output is
renamed into place (a folder that exists is first moved aside). Pulling again
is harmless: the same files are placed again. Only ``SUCCEEDED → PULLED`` is a
state change, done after the files are in place.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import protocol as P
from .archive import safe_extract, sha256_file
from .atomic import temp_path
from .config import Project
from .errors import (
    HubError,
    HubNotFound,
    IllegalTransitionError,
    OrchError,
    PullError,
    PullLaterError,
    is_disk_full,
)
from .hubs import Hub
from .models import HAS_RESULT, Job, JobState, OutputSpec
from .store import Store

log = logging.getLogger(__name__)
def default_dest(project: Project, job: Job) -> str:
    return f"{project.settings.outputs_dir.strip('/')}/{job.name}"


def destinations(project: Project, job: Job, to: Path | None) -> list[Path]:
    """Where output i of ``job`` goes: its DEST (or models/<name>/), or ``to``. Jobs
    with ``--output`` have one more: their learning-curve logs (see outputs.collect)
    go to models/<name>/ as well."""
    specs = (*job.outputs, OutputSpec(".", ""))
    out: list[Path] = []
    for spec in specs:
        if to is not None:
            out.append(to.resolve())
            continue
        dest = (project.root / (spec.dest or default_dest(project, job))).resolve()
        if not dest.is_relative_to(project.root):
            raise PullError(f"output destination {spec.dest} is outside the project")
        out.append(dest)
    return out


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, atomically. Across file systems (a project folder
    mounted elsewhere than its ``.orch/``) the copy goes beside ``dst`` first, then is
    renamed over it: a half-copied model never appears at ``dst`` either."""
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = temp_path(dst)
        shutil.move(str(src), str(tmp))
        os.replace(tmp, dst)


@dataclass(frozen=True)
class Pulled:
    """What a pull placed, and one line for each earlier file it replaced that was
    not this job's own (kept under ``.orch/replaced/``)."""

    paths: list[Path]
    notes: list[str]


class _Placer:
    """Moves extracted outputs into place (renames, same filesystem). What is in the
    way goes to the stage's trash if this job delivered it before, else is kept in
    ``.orch/replaced/<job>-<time>/`` with a note saying whose it was."""

    def __init__(self, project: Project, job: Job, delivered: dict[str, str],
                 names: dict[str, str], trash: Path) -> None:
        self.project = project
        self.job = job
        self.delivered = delivered
        self.names = names  # job id → name, for the notes
        self.trash = trash
        self.keep = project.state_dir / "replaced" / (
            f"{job.id}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.notes: list[str] = []

    def owner(self, rel: str) -> str | None:
        return next((j for top, j in self.delivered.items()
                     if rel == top or rel.startswith(top + "/")), None)

    def place(self, entry: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            inside = target.is_relative_to(self.project.root)
            rel = target.relative_to(self.project.root).as_posix() if inside else None
            owner = self.owner(rel) if rel is not None else self.job.id
            if owner == self.job.id:
                _move(target, self.trash / f"{target.name}.{time.time_ns()}")
            else:
                aside = self.keep / str(rel)
                aside.parent.mkdir(parents=True, exist_ok=True)
                _move(target, aside)
                whose = (f"delivered by job {owner} ({self.names.get(owner, '?')})" if owner
                         else "not delivered by orch")
                self.notes.append(f"replaced {rel} ({whose}); the replaced copy is in "
                                  f"{aside.relative_to(self.project.root)}")
        _move(entry, target)


def pull_job(project: Project, store: Store, hub: Hub, job: Job,
             to: Path | None = None) -> Pulled:
    """Pull one SUCCEEDED (or PULLED, again) job. The files keep the times they were
    made on the worker; project paths are recorded as this job's deliveries, so
    later snapshots leave them out."""
    if job.state not in HAS_RESULT:
        raise PullError(f"job {job.id} ({job.name}) is {job.state.value}, not finished")
    try:
        sealed = hub.get_doc(P.result_json(job.id, job.attempt), P.Seal)
    except HubError as exc:
        raise PullLaterError(f"job {job.id}: cannot read its seal on the hub: {exc}") from exc
    if sealed is None:
        raise PullLaterError(f"job {job.id} has no sealed result on the hub (yet)")
    dests = destinations(project, job, to)
    staging_root = project.state_dir / "staging"
    staging_root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f"{job.id}-", dir=staging_root))
    placed: list[Path] = []
    try:
        key = P.result_tar(job.id, job.attempt)
        archive = hub.local_path(key)  # a folder hub: read the sealed file in place
        if archive is None or not archive.is_file():
            archive = stage / "result.tar"
            try:
                hub.get_file(key, archive)
            except HubNotFound as exc:
                raise PullLaterError(f"job {job.id}: result archive missing from the hub") \
                    from exc
        got = sha256_file(archive)
        if got != sealed.sha256:
            raise PullError(
                f"job {job.id}: result archive is corrupt or was tampered with "
                f"(sha256 {got[:12]}… ≠ sealed {sealed.sha256[:12]}…); not pulled"
            )
        tree = stage / "tree"
        safe_extract(archive, tree)
        trash = stage / "trash"
        trash.mkdir()
        delivered = store.deliveries()
        names = {j: store.get(j).name for j in set(delivered.values()) if j != job.id}
        placer = _Placer(project, job, delivered, names, trash)
        for i, dest in enumerate(dests):
            folder = tree / str(i)
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                target = dest / entry.name
                placer.place(entry, target)
                placed.append(target)
    except (OSError, HubError) as exc:
        if is_disk_full(exc):
            raise PullLaterError(
                f"disk full while pulling job {job.id} ({job.name}): free some space; the "
                f"daemon tries again (or run `orch pull {job.id}`)"
            ) from exc
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise PullLaterError(f"cannot pull job {job.id}: {reason}") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    rel = [str(p.relative_to(project.root)) if p.is_relative_to(project.root) else str(p)
           for p in placed]
    store.record_deliveries(job.id, [p.relative_to(project.root).as_posix() for p in placed
                                     if p.is_relative_to(project.root)])
    for note in placer.notes:
        store.note(job.id, note)
        log.info("%s: %s", job.id, note)
    if job.state is JobState.SUCCEEDED and to is None:
        try:
            store.transition(job.id, JobState.PULLED, "pulled: " + ", ".join(rel),
                             expect=[JobState.SUCCEEDED], pulled_to=rel, error=None,
                             pull_error=None)
        except IllegalTransitionError:
            pass  # pulled concurrently by the daemon or another `orch pull`
    log.info("pulled %s into %s", job.id, ", ".join(rel))
    return Pulled(placed, placer.notes)


def pull_many(project: Project, store: Store, refs: list[str] | None = None,
              again: bool = False, to: Path | None = None
              ) -> Iterator[tuple[Job, Pulled | PullError]]:
    """`orch pull`: each job named by ``refs`` (default: every SUCCEEDED job, and with
    ``again`` the PULLED ones too) with what was placed, or the PullError that stopped
    it. One job's failure does not stop the others."""
    from .hubs import project_hub

    if refs:
        targets = [store.resolve(r) for r in refs]
    else:
        targets = store.jobs(HAS_RESULT if again else [JobState.SUCCEEDED])
    hubs: dict[str, Hub | PullError] = {}
    for job in targets:
        if job.hub not in hubs:
            try:
                hubs[job.hub] = project_hub(project, job.hub)
            except OrchError as exc:  # e.g. a host removed, or away: this job's error
                hubs[job.hub] = PullLaterError(f"{job.id}: cannot open hub {job.hub}: {exc}")
        hub = hubs[job.hub]
        if isinstance(hub, PullError):
            yield job, hub
            continue
        try:
            yield job, pull_job(project, store, hub, job, to=to)
        except PullError as exc:
            yield job, exc


class AutoPull:
    """The daemon's pulls: every SUCCEEDED job, as soon as it is sealed. A failed pull
    is recorded on the job (``pull_error``: `orch status` shows it and `--wait` stops
    waiting); one that may work later is tried again with a growing pause (up to
    five minutes), one that will not (a corrupt or unsafe result) is left to the user."""

    def __init__(self, project: Project, store: Store) -> None:
        self.project = project
        self.store = store
        self.later: dict[str, tuple[float, float]] = {}  # job id → (next try, pause)
        self.given_up: set[tuple[str, int]] = set()

    def waiting(self) -> int:
        """How many sealed results still wait to be pulled by the daemon."""
        return sum(1 for j in self.store.jobs([JobState.SUCCEEDED])
                   if (j.id, j.attempt) not in self.given_up)

    def run(self, hubs: dict[str, Hub], now: float) -> None:
        for job in self.store.jobs([JobState.SUCCEEDED]):
            hub = hubs.get(job.hub)
            next_try, pause = self.later.get(job.id, (0.0, 1.0))
            if hub is None or (job.id, job.attempt) in self.given_up or now < next_try:
                continue
            try:
                pull_job(self.project, self.store, hub, job)
                self.later.pop(job.id, None)
            except PullError as exc:
                self.store.update(job.id, pull_error=str(exc))
                if isinstance(exc, PullLaterError):
                    self.later[job.id] = (now + pause, min(300.0, pause * 2))
                    log.warning("%s (trying again in %.0f s)", exc, pause)
                else:
                    self.given_up.add((job.id, job.attempt))
                    self.store.note(job.id, f"auto-pull failed: {exc}")
                    log.error("%s", exc)
