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
from .config import Project
from .errors import HubError, HubNotFound, IllegalTransitionError, PullError
from .hubs import Hub
from .models import HAS_RESULT, Job, JobState, OutputSpec
from .store import Store

log = logging.getLogger(__name__)
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a full disk or quota."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        exc = exc.__cause__
    return False


def default_dest(project: Project, job: Job) -> str:
    return f"{project.settings.outputs_dir.strip('/')}/{job.name}"


def destinations(project: Project, job: Job, to: Path | None) -> list[Path]:
    """Where output i of ``job`` goes: its DEST (or models/<name>/), or ``to``."""
    specs = job.outputs or (OutputSpec(".", ""),)
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
                os.replace(target, self.trash / f"{target.name}.{time.time_ns()}")
            else:
                aside = self.keep / str(rel)
                aside.parent.mkdir(parents=True, exist_ok=True)
                os.replace(target, aside)
                whose = (f"delivered by job {owner} ({self.names.get(owner, '?')})" if owner
                         else "not delivered by orch")
                self.notes.append(f"replaced {rel} ({whose}); the replaced copy is in "
                                  f"{aside.relative_to(self.project.root)}")
        os.replace(entry, target)


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
        raise PullError(f"job {job.id}: unusable seal on the hub: {exc}") from exc
    if sealed is None:
        raise PullError(f"job {job.id} has no sealed result on the hub")
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
                raise PullError(f"job {job.id}: result archive missing from the hub") from exc
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
        if _disk_full(exc):
            raise PullError(
                f"disk full while pulling job {job.id} ({job.name}): free some space, then "
                f"run `orch pull {job.id}`"
            ) from exc
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise PullError(f"cannot pull job {job.id}: {reason}") from exc
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
                             expect=[JobState.SUCCEEDED], pulled_to=rel, error=None)
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
    for job in targets:
        try:
            yield job, pull_job(project, store, project_hub(project, job.hub), job, to=to)
        except PullError as exc:
            yield job, exc
