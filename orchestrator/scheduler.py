"""The scheduler tick: the only place that moves jobs between places.

One tick, in order: read workers' heartbeats, read the status of every attempt
on a worker, expire the leases of silent workers (their job goes LOST, then back
to QUEUED as attempt+1), pass cancel requests on, and assign queued jobs to free
workers (priority first, then submit order; GPU jobs only to GPU workers).

Assignment order is chosen for crash safety: the store says ASSIGNED before the
inbox file exists. A crash in between leaves an ASSIGNED job with no inbox file;
:meth:`Scheduler.recover` (run at daemon start) writes it again. The reverse
order could run a job twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from . import protocol as P
from .config import Project
from .errors import HubError, IllegalTransitionError, ProtocolError
from .hubs import Hub, claim_hub
from .identity import load_identity
from .models import ON_WORKER, GpuNeed, Job, JobState, WorkerInfo
from .places import gpu_allows, target_allows
from .signing import sign
from .store import Store

log = logging.getLogger(__name__)
S = JobState

#: Is this (local) worker's process alive? None when it cannot be told.
AliveCheck = Callable[[WorkerInfo], bool | None]


def manifest_for(job: Job) -> P.Manifest:
    """What a worker needs to run ``job`` (jobs/<id>/manifest.json)."""
    return P.Manifest(job_id=job.id, name=job.name, script=job.script, args=job.args,
                      env=job.env, snapshot=job.snapshot_sha256, data=job.data,
                      outputs=job.outputs, gpu=job.gpu, autotrack=job.autotrack)


def worker_fits(job: Job, worker: WorkerInfo, now: float | None = None) -> bool:
    """Can ``worker`` take ``job``? Place, GPU, and (for Colab) whether the session
    lasts long enough for the job's estimate unless the job checkpoints."""
    left = worker.time_left(time.time() if now is None else now)
    if left is not None and job.estimate_s and job.estimate_s > left and not job.checkpoints:
        return False
    return target_allows(job.target, worker) and gpu_allows(job, worker)


def preference(job: Job, worker: WorkerInfo) -> tuple[int, str]:
    """Lower is better: GPU workers first unless the job asked for the CPU."""
    wants_gpu = job.gpu is not GpuNeed.NONE
    return (0 if worker.gpu == wants_gpu else 1, worker.name)


class Scheduler:
    def __init__(self, project: Project, store: Store, hubs: Hub | dict[str, Hub],
                 alive: AliveCheck | None = None) -> None:
        """``hubs`` by name; a single hub is the ``local`` one. Each is claimed for
        the project (``hub.json``): one of another project or protocol is refused."""
        self.project = project
        self.store = store
        self.identity = load_identity(project.state_dir)
        self.hubs: dict[str, Hub] = {}
        for name, hub in (hubs if isinstance(hubs, dict) else {"local": hubs}).items():
            self.add_hub(name, hub)
        self.alive = alive or (lambda w: None)
        self.settings = project.settings
        self._missing: set[str] = set()  # hubs warned about
        self._refused: set[str] = set()  # heartbeats of another protocol, warned about

    def add_hub(self, name: str, hub: Hub) -> None:
        """Serve ``hub`` under ``name`` from now on (after checking it is ours)."""
        claim_hub(hub, self.identity.project_id)
        self.hubs[name] = hub

    def hub_of(self, name: str) -> Hub | None:
        hub = self.hubs.get(name)
        if hub is None and name not in self._missing:
            self._missing.add(name)
            log.warning("hub %r is not connected (or no longer configured); its jobs wait",
                        name)
        elif hub is not None:
            self._missing.discard(name)
        return hub

    # ---- the tick -----------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.sync_workers(now)
        self.sync_statuses()
        self.expire_leases(now)
        self.pass_cancels()
        self.assign()

    def recover(self, now: float | None = None) -> None:
        """At daemon start: forgive downtime, and finish half-done assignments."""
        now = time.time() if now is None else now
        self.store.refresh_worker_leases(now)
        for job in self.store.jobs([S.ASSIGNED]):
            hub = self.hub_of(job.hub)
            if job.worker_id is None or hub is None:
                continue
            key = P.inbox(job.worker_id, job.id, job.attempt)
            if not hub.exists(key) and not hub.exists(P.status(job.id, job.attempt)):
                log.info("re-writing the assignment of %s attempt %d", job.id, job.attempt)
                self.write_assignment(job, job.worker_id, hub)

    # ---- steps --------------------------------------------------------------

    def sync_workers(self, now: float) -> None:
        for name, hub in self.hubs.items():
            for wid in hub.list("workers"):
                self.sync_worker(name, hub, wid, now)

    def sync_worker(self, hub_name: str, hub: Hub, wid: str, now: float) -> None:
        try:
            beat = hub.get_doc(P.heartbeat(wid), P.Heartbeat)
        except ProtocolError as exc:
            if wid not in self._refused:
                self._refused.add(wid)
                log.warning("worker %s ignored: %s", wid, exc)
            return
        if beat is None or beat.worker_id != wid:
            return
        new, _ = self.store.upsert_worker(beat, now, hub=hub_name)
        if new:
            log.info("worker %s joined %s (%s, gpu=%s)", wid, hub_name,
                     beat.capabilities.kind, beat.capabilities.gpu)

    def sync_statuses(self) -> None:
        for job in self.store.jobs(ON_WORKER):
            hub = self.hub_of(job.hub)
            if hub is None:
                continue
            try:
                status = hub.get_doc(P.status(job.id, job.attempt), P.RunStatus)
            except ProtocolError as exc:
                log.warning("status of %s ignored: %s", job.id, exc)
                continue
            if status is None or status.attempt != job.attempt:
                continue
            self.apply_status(job, status, hub)

    def apply_status(self, job: Job, status: P.RunStatus, hub: Hub) -> None:
        phase = status.phase
        progress = status.progress
        resumed = status.resumed_from_epoch
        try:
            if job.state is S.ASSIGNED and phase is not P.Phase.CANCELLED:
                started = status.started_at or time.time()
                job = self.store.transition(
                    job.id, S.RUNNING, f"started on {job.worker_id}", expect=[S.ASSIGNED],
                    on_attempt=job.attempt, started_at=started,
                )
                self.store.update_attempt(job.id, job.attempt, started_at=started)
            if resumed and resumed > 0:
                self.store.update_attempt(job.id, job.attempt, resumed_from_epoch=resumed)
            if progress and progress != job.progress:
                self.store.update(job.id, on_attempt=job.attempt, progress=progress)
            if phase is P.Phase.SUCCEEDED:
                if not hub.exists(P.result_json(job.id, job.attempt)):
                    return  # status can show before the seal on lagging hubs
                self.finish(job, S.SUCCEEDED, "result sealed", exit_code=0)
            elif phase is P.Phase.FAILED:
                self.finish(job, S.FAILED, status.error or "failed",
                            exit_code=status.exit_code, error=status.error)
            elif phase is P.Phase.CANCELLED:
                self.finish(job, S.CANCELLED, "cancelled on the worker")
                hub.delete(P.cancel(job.id))
        except IllegalTransitionError as exc:
            log.info("status of %s ignored: %s", job.id, exc)

    def finish(self, job: Job, dst: JobState, message: str, **fields: Any) -> None:
        now = time.time()
        self.store.transition(job.id, dst, message, expect=ON_WORKER,
                              on_attempt=job.attempt, finished_at=now, **fields)
        self.store.update_attempt(job.id, job.attempt, ended_at=now, outcome=dst.value)
        hub = self.hubs.get(job.hub)
        if job.worker_id and hub is not None:
            hub.delete(P.inbox(job.worker_id, job.id, job.attempt))
        log.info("%s %s: %s", job.id, dst.value, message)

    def expire_leases(self, now: float) -> None:
        for worker in self.store.workers():
            ttl = (self.settings.lease_ttl if worker.hub == "local"
                   else self.settings.remote_lease_ttl)
            # never shorter than three of the worker's own heartbeats
            ttl = max(ttl, 3 * (worker.heartbeat_interval or 0))
            reason = None
            if worker.state == P.WorkerState.STOPPED.value:
                reason = "worker stopped"
            elif self.alive(worker) is False:
                reason = "worker process died"
            elif now - worker.last_seen > ttl:
                reason = f"no heartbeat for {now - worker.last_seen:.0f} s (lease {ttl:.0f} s)"
            if reason is None:
                continue
            self.store.mark_worker_gone(worker.id)
            log.info("worker %s gone: %s", worker.id, reason)
            for job in self.store.jobs(ON_WORKER):
                if job.worker_id == worker.id:
                    self.lose(job, reason)
            hub = self.hubs.get(worker.hub)
            if worker.state == P.WorkerState.STOPPED.value and hub is not None:
                hub.delete(P.worker_dir(worker.id))

    def lose(self, job: Job, reason: str) -> None:
        """Lease expired: LOST, withdraw the assignment (fences a zombie), re-queue."""
        try:
            self.store.transition(job.id, S.LOST, f"lost on {job.worker_id}: {reason}",
                                  expect=ON_WORKER, on_attempt=job.attempt)
        except IllegalTransitionError:
            return
        self.store.update_attempt(job.id, job.attempt, ended_at=time.time(), outcome="LOST")
        hub = self.hubs.get(job.hub)
        if job.worker_id and hub is not None:
            hub.delete(P.inbox(job.worker_id, job.id, job.attempt))
        nxt = job.attempt + 1
        self.store.transition(
            job.id, S.QUEUED, f"re-queued as attempt {nxt} (resumes from its checkpoint)",
            expect=[S.LOST], on_attempt=job.attempt, worker_id=None, attempt=nxt,
            progress={},
        )
        if job.cancel_requested:
            self.store.transition(job.id, S.CANCELLED, "cancelled", expect=[S.QUEUED],
                                  finished_at=time.time())

    def pass_cancels(self) -> None:
        for job in self.store.jobs(ON_WORKER):
            hub = self.hubs.get(job.hub)
            if job.cancel_requested and hub is not None and not hub.exists(P.cancel(job.id)):
                hub.put_doc(P.cancel(job.id), P.Cancel(job_id=job.id, at=time.time()))
                log.info("cancel marker written for %s", job.id)

    def free_workers(self) -> list[WorkerInfo]:
        busy = {j.worker_id for j in self.store.jobs(ON_WORKER)}
        return [w for w in self.store.workers()
                if w.id not in busy and w.state != P.WorkerState.STOPPED.value]

    def assign(self) -> None:
        queued = self.store.queued()
        if not queued:
            return
        free = self.free_workers()
        for job in queued:
            if job.cancel_requested:
                try:
                    self.store.transition(job.id, S.CANCELLED, "cancelled before it started",
                                          expect=[S.QUEUED], finished_at=time.time())
                except IllegalTransitionError:
                    pass
                continue
            fitting = sorted((w for w in free if worker_fits(job, w)),
                             key=lambda w: preference(job, w))
            if not fitting:
                continue
            worker = fitting[0]
            hub = self.hubs.get(worker.hub)
            if hub is None:
                continue
            try:
                self.publish(job, hub)
                job = self.store.transition(
                    job.id, S.ASSIGNED, f"assigned to {worker.id} (attempt {job.attempt})",
                    expect=[S.QUEUED], on_attempt=job.attempt, worker_id=worker.id,
                    hub=worker.hub,
                )
            except IllegalTransitionError:
                continue  # cancelled meanwhile
            except HubError as exc:
                log.warning("cannot publish %s: %s", job.id, exc)
                continue
            self.store.start_attempt(job.id, job.attempt, worker.id)
            self.write_assignment(job, worker.id, hub)
            free.remove(worker)

    def publish(self, job: Job, hub: Hub) -> None:
        """Make the job's blobs and manifest available on ``hub`` (idempotent; a
        blob already there, by its sha256, is not sent again)."""
        local = self.project.hub_dir / "blobs"
        for sha in [job.snapshot_sha256, *(d.sha256 for d in job.data)]:
            if not hub.exists(P.blob(sha)):
                hub.put_file(P.blob(sha), local / sha)
        hub.put_doc(P.manifest(job.id), sign(manifest_for(job), self.identity.key))

    def write_assignment(self, job: Job, worker_id: str, hub: Hub) -> None:
        """Write the (signed) assignment of the job's current attempt to ``worker_id``."""
        doc = P.Assignment(job_id=job.id, attempt=job.attempt, worker_id=worker_id,
                           assigned_at=time.time())
        hub.put_doc(P.inbox(worker_id, job.id, job.attempt), sign(doc, self.identity.key))
