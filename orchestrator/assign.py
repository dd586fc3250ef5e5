"""Assigning queued jobs to workers: plan the head of the queue (:mod:`.placement`
through the :class:`~.planner.Planner`) and give each job whose best place is a free
worker to it; per-job workers take only their job.

Order of one assignment (a crash anywhere loses nothing, runs nothing twice): the
job's blobs and signed manifest go to the worker's hub, then the store says
ASSIGNED (one transaction), then the signed assignment is written to the worker's
inbox. A failed publish leaves the job QUEUED; a failed assignment write is redone
by the scheduler's repair.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import protocol as P
from .config import Project
from .errors import HubError, IllegalTransitionError, OrchError
from .hubs import Hub
from .models import ON_WORKER, Job, JobState, WorkerInfo
from .places import Place, gpu_allows, target_allows
from .planner import Planner, fits_memory, placeable
from .signing import sign
from .store import Store

log = logging.getLogger(__name__)
S = JobState
READY = 1.0  # a server that can start a job within this many seconds is free now
REPLAN = 60.0  # plan again at least this often (busy workers' expected ends drift)


def manifest_for(job: Job) -> P.Manifest:
    """What a worker needs to run ``job`` (jobs/<id>/manifest.json), unsigned."""
    return P.Manifest(job_id=job.id, name=job.name, script=job.script, args=job.args,
                      env=job.env, snapshot=job.snapshot_sha256, data=job.data,
                      outputs=job.outputs, gpu=job.gpu, autotrack=job.autotrack)


class Assigner:
    """The scheduler's assignment step. ``hubs`` is the scheduler's own dict (hubs
    come and go); a worker whose hub is not in it now is given no work."""

    def __init__(self, project: Project, store: Store, hubs: dict[str, Hub],
                 places: list[Place], planner: Planner, key: str) -> None:
        self.project = project
        self.store = store
        self.hubs = hubs
        self.places = places
        self.planner = planner
        self.key = key
        self.seen: tuple[Any, ...] | None = None  # what the last assign() saw

    def free_workers(self, on_worker: list[Job] | None = None) -> list[WorkerInfo]:
        """Live workers with a free slot."""
        on_worker = self.store.jobs(ON_WORKER) if on_worker is None else on_worker
        held: dict[str | None, int] = {}
        for j in on_worker:
            held[j.worker_id] = held.get(j.worker_id, 0) + 1
        return [w for w in self.store.workers()
                if held.get(w.id, 0) < max(1, w.slots) and w.hub in self.hubs
                and w.state != P.WorkerState.STOPPED.value]

    def _cancel_queued(self, jobs: list[Job]) -> None:
        """Queued jobs whose cancel was asked while they were being re-queued."""
        for job in jobs:
            try:
                self.store.transition(job.id, S.CANCELLED, "cancelled before it started",
                                      expect=[S.QUEUED], finished_at=time.time())
            except IllegalTransitionError:
                pass

    def assign(self, now: float | None = None) -> None:
        """Plan the head of the queue (:mod:`.placement`) and assign each job whose best
        place is a free worker now; a job whose best place is busy, or still to be
        started, waits for it (the places are told which new workers the plan wants).
        Skipped while neither the jobs nor the workers changed since the last call
        (and for at most REPLAN seconds): a queue nobody can take costs next to
        nothing per tick."""
        now = time.time() if now is None else now
        on_worker = self.store.jobs(ON_WORKER)
        free = self.free_workers(on_worker)
        # a worker on a hub out of reach cannot be given work now
        workers = [w for w in self.store.workers() if w.hub in self.hubs]
        seen = (self.store.queue_version(), tuple(sorted(w.id for w in free)),
                tuple(sorted(w.id for w in workers)), int(now // REPLAN))
        if seen == self.seen:
            return
        self.seen = seen
        # a per-job worker is given its job even if it holds another: a worker takes
        # only its own job (that other one is re-queued when the worker is gone)
        self.assign_own_jobs([w for w in workers if w.only_job
                              and w.state != P.WorkerState.STOPPED.value])
        free = [w for w in free if not w.only_job]
        workers = [w for w in workers if not w.only_job]
        servers = self.planner.servers(workers, on_worker, now)
        queued = self.store.queued(limit=self.planner.head_size(servers),
                                   kinds=placeable(self.store.queued_kinds(), servers))
        self._cancel_queued([j for j in queued if j.cancel_requested])
        queued = [j for j in queued if not j.cancel_requested]
        decisions = self.planner.decide(queued, servers, now)
        wanted: dict[str, list[str]] = {}
        by_id = {w.id: w for w in free}
        for job, decision in zip(queued, decisions):
            choice = decision.choice
            if choice is None:
                continue
            if not choice.live:
                wanted.setdefault(choice.place, []).append(choice.server)
                continue
            worker = by_id.get(choice.server.partition("#")[0])
            if choice.start_in > READY or worker is None or not fits_memory(
                    job, worker, on_worker, self.planner.memory):
                continue  # its best place is busy: it waits for it
            if self.start(job, worker):
                on_worker.append(self.store.get(job.id))
                if len([j for j in on_worker if j.worker_id == worker.id]) >= worker.slots:
                    del by_id[worker.id]
        for place in self.places:
            place.want(wanted.get(place.name, []))
        if self.seen is not None:  # None: a publish failed, try again next tick
            self.seen = (self.store.queue_version(), *seen[1:])

    def assign_own_jobs(self, workers: list[WorkerInfo]) -> None:
        """A per-job worker takes its one job (if queued and its --on allows it), and
        no other: placement never sees it, and the worker refuses any other."""
        for worker in workers:
            try:
                job = self.store.get(worker.only_job or "")
            except OrchError:
                continue
            if job.state is S.QUEUED and not job.cancel_requested and target_allows(
                    job.target, worker) and gpu_allows(job, worker):
                self.start(job, worker)

    def start(self, job: Job, worker: WorkerInfo) -> bool:
        """Publish, assign (one transaction), then write the assignment: True if the
        job is now the worker's."""
        hub = self.hubs.get(worker.hub)
        if hub is None:
            return False
        try:
            self.publish(job, hub)
            job = self.store.assign(job.id, job.attempt, worker.id, worker.hub)
        except IllegalTransitionError:
            return False  # cancelled meanwhile
        except HubError as exc:
            log.warning("cannot publish %s: %s", job.id, exc)
            self.seen = None  # try again next tick
            return False
        try:
            self.write_assignment(job, worker.id, hub)
        except HubError as exc:  # the store says ASSIGNED: repair() writes it later
            log.warning("assignment of %s not written yet: %s", job.id, exc)
        return True

    def publish(self, job: Job, hub: Hub) -> None:
        """Make the job's blobs and its signed manifest available on ``hub``
        (idempotent; a blob already there, by its sha256, is not sent again)."""
        local = self.project.hub_dir / "blobs"
        for sha in [job.snapshot_sha256, *(d.sha256 for d in job.data)]:
            if not hub.exists(P.blob(sha)):
                hub.put_file(P.blob(sha), local / sha)
        hub.put_doc(P.manifest(job.id), sign(manifest_for(job), self.key))

    def write_assignment(self, job: Job, worker_id: str, hub: Hub) -> None:
        """Write the (signed) assignment of the job's current attempt to ``worker_id``."""
        settings = self.project.settings
        ttl = settings.lease_ttl if job.hub == "local" else settings.remote_lease_ttl
        doc = P.Assignment(job_id=job.id, attempt=job.attempt, worker_id=worker_id,
                           assigned_at=time.time(), resume_from=job.fresh_from,
                           lease_ttl=ttl)
        hub.put_doc(P.inbox(worker_id, job.id, job.attempt), sign(doc, self.key))
