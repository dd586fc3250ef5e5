"""The scheduler tick: the only place that moves jobs between places.

One tick, in order: read workers' heartbeats, read the status of every attempt
on a worker, expire the leases of silent workers (their job goes LOST and back to
QUEUED as attempt+1, in one transaction), repair the hub, pass cancel requests
on, and assign queued jobs to free workers (priority first, then submit order;
GPU jobs only to GPU workers).

Every state change is one store transaction (:class:`~.store.Store`'s moves); hub
I/O comes after the commit. A crash or a hub error between the two leaves the hub
behind the store, never the reverse, and :meth:`Scheduler.repair` catches the hub
up on every tick: an ASSIGNED job whose inbox file is missing gets it again, an
inbox file of an attempt that is no longer current is withdrawn. The store says
ASSIGNED before the inbox file exists; the reverse order could run a job twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from . import protocol as P
from .assign import Assigner
from .config import Project
from .errors import HubError, IllegalTransitionError, ProtocolError
from .hubs import Hub, claim_hub
from .identity import load_identity
from .models import ON_WORKER, Job, JobState, WorkerInfo
from .places import Place, project_places
from .planner import Planner
from .store import Store

log = logging.getLogger(__name__)
S = JobState

#: Why this worker's process has ended (it died; Ray says its job failed), or None
#: while it lives or when that cannot be told.
EndedCheck = Callable[[WorkerInfo], str | None]
#: Called when a worker is declared gone, before its jobs are re-queued: a place
#: that can (the local one) makes sure nothing of it still runs.
GoneHook = Callable[[WorkerInfo, list[Job]], None]


class Scheduler:
    def __init__(self, project: Project, store: Store, hubs: Hub | dict[str, Hub],
                 ended: EndedCheck | None = None, on_gone: GoneHook | None = None,
                 places: Sequence[Place] | None = None, policy: str | None = None) -> None:
        """``hubs`` by name; a single hub is the ``local`` one. Each is claimed for
        the project (``hub.json``): one of another project or protocol is refused.
        ``places`` (default: the project's) answer what placement asks of them;
        ``policy`` (default: the ``placement`` setting) is how jobs are placed."""
        self.project = project
        self.store = store
        self.places = list(places) if places is not None else project_places(project)
        self.planner = Planner(project, store, self.places,
                               policy or project.settings.placement)
        self.identity = load_identity(project.state_dir)
        self.hubs: dict[str, Hub] = {}
        for name, hub in (hubs if isinstance(hubs, dict) else {"local": hubs}).items():
            self.add_hub(name, hub)
        self.ended = ended or (lambda w: None)
        self.on_gone = on_gone or (lambda w, jobs: None)
        self.settings = project.settings
        self._missing: set[str] = set()  # hubs warned about
        self._refused: set[str] = set()  # heartbeats of another protocol, warned about
        self._unread: dict[str, str] = {}  # hub -> why its workers were unreadable (said once)
        self._beats: dict[tuple[str, str], str] = {}  # the heartbeat text last read
        self._read_at: dict[str, float] = {}  # when each hub's heartbeats were last read
        self.assigner = Assigner(project, store, self.hubs, self.places, self.planner,
                                 self.identity.key)

    def add_hub(self, name: str, hub: Hub) -> None:
        """Serve ``hub`` under ``name`` from now on (after checking it is ours)."""
        claim_hub(hub, self.identity.project_id)
        self.hubs[name] = hub

    def drop_hub(self, name: str) -> None:
        """Stop serving hub ``name`` (it cannot be reached): its jobs wait, and its
        workers keep their leases up to ``unreachable_lease_ttl``."""
        if self.hubs.pop(name, None) is not None:
            log.warning("hub %s is out of reach; its jobs wait for it", name)
        self._beats = {k: v for k, v in self._beats.items() if k[0] != name}

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
        self.repair()
        self.pass_cancels()
        self.rebalance(now)
        self.assigner.assign(now)

    def recover(self, now: float | None = None) -> None:
        """At daemon start: forgive downtime (fresh leases), re-queue jobs an older
        orch left LOST, and catch the hub up with the store."""
        now = time.time() if now is None else now
        self.store.refresh_worker_leases(now)
        for job_id in self.store.requeue_lost():
            log.info("re-queued %s, left LOST", job_id)
        self.repair()

    # ---- steps --------------------------------------------------------------

    def sync_workers(self, now: float) -> None:
        """Record every changed heartbeat, one transaction per hub (a heartbeat whose
        text is what this scheduler last read is not even decoded). A remote hub that
        fails this tick is skipped (its workers' leases are judged later), so one
        host's trouble does not stop the others."""
        for name, hub in list(self.hubs.items()):
            try:
                beats = [read for wid in hub.list(P.WORKERS)
                         if (read := self.read_heartbeat(name, hub, wid)) is not None]
            except HubError as exc:
                if name == "local":
                    raise  # the project's own folder: the daemon says so and retries
                if self._unread.get(name) != str(exc):  # once, not every tick
                    self._unread[name] = str(exc)
                    log.warning("cannot read the workers of hub %s: %s", name, exc)
                continue
            if self._unread.pop(name, None) is not None:
                log.info("the workers of hub %s are readable again", name)
            self._read_at[name] = now
            for (beat, text), (new, _) in zip(beats, self.store.upsert_workers(beats, now, name)):
                self._beats[(name, beat.worker_id)] = text  # recorded: skipped until it changes
                if new:
                    log.info("worker %s joined %s (%s, gpu=%s)", beat.worker_id, name,
                             beat.capabilities.kind, beat.capabilities.gpu)

    def read_heartbeat(self, hub_name: str, hub: Hub,
                       wid: str) -> tuple[P.Heartbeat, str] | None:
        """A worker's heartbeat with its text; None if absent, unreadable, refused
        (warned about once) or unchanged since it was last recorded."""
        try:
            read = hub.get_doc_text(P.heartbeat(wid), P.Heartbeat,
                                    self._beats.get((hub_name, wid)))
        except ProtocolError as exc:
            if wid not in self._refused:
                self._refused.add(wid)
                log.warning("worker %s ignored: %s", wid, exc)
            return None
        return None if read is None or read[0].worker_id != wid else read

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
            except HubError as exc:
                if job.hub == "local":
                    raise
                log.info("status of %s not readable this tick: %s", job.id, exc)
                continue
            if status is None or status.attempt != job.attempt:
                continue
            self.apply_status(job, status, hub)

    def apply_status(self, job: Job, status: P.RunStatus, hub: Hub) -> None:
        phase = status.phase
        try:
            if job.state is S.ASSIGNED and phase is not P.Phase.CANCELLED:
                job = self.store.start(job.id, job.attempt, status.started_at or time.time(),
                                       f"started on {job.worker_id}")
            if status.resumed_from_epoch:
                self.store.update_attempt(job.id, job.attempt,
                                          resumed_from_epoch=status.resumed_from_epoch)
            if status.progress and status.progress != job.progress:
                self.store.update(job.id, on_attempt=job.attempt, progress=status.progress)
            if phase is P.Phase.SUCCEEDED:
                if not hub.exists(P.result_json(job.id, job.attempt)):
                    return  # status can show before the seal on lagging hubs
                self.finish(job, S.SUCCEEDED, "result sealed", ended_at=status.ended_at,
                            exit_code=0)
            elif phase is P.Phase.FAILED:
                self.finish(job, S.FAILED, status.error or "failed",
                            exit_code=status.exit_code, error=status.error)
            elif phase is P.Phase.CANCELLED:
                self.finish(job, S.CANCELLED, "cancelled on the worker")
        except IllegalTransitionError as exc:
            log.info("status of %s ignored: %s", job.id, exc)

    def finish(self, job: Job, dst: JobState, message: str, ended_at: float | None = None,
               **fields: Any) -> None:
        """End the attempt (one transaction), withdraw it, and learn from a success
        (``ended_at``: when it ended by the worker's clock, as its ``started_at``)."""
        done = self.store.finish(job.id, job.attempt, dst, message, **fields)
        log.info("%s %s: %s", job.id, dst.value, message)
        self._withdraw(job)
        if dst is S.SUCCEEDED:
            worker = next((w for w in self.store.workers(include_gone=True)
                           if w.id == job.worker_id), None)
            self.planner.learn(done, worker, ended_at or time.time())

    def _withdraw(self, job: Job) -> None:
        """Best effort, after the commit: remove the attempt's inbox file (and a cancel
        marker it no longer needs). What fails here, repair() redoes."""
        hub = self.hubs.get(job.hub)
        if hub is None or job.worker_id is None:
            return
        try:
            hub.delete(P.inbox(job.worker_id, job.id, job.attempt))
            if job.cancel_requested:
                hub.delete(P.cancel(job.id))
        except HubError as exc:
            log.warning("could not withdraw %s attempt %d yet: %s", job.id, job.attempt, exc)

    def expire_leases(self, now: float) -> None:
        on_worker = self.store.jobs(ON_WORKER)
        for worker in self.store.workers():
            ttl = (self.settings.lease_ttl if worker.hub == "local"
                   else self.settings.remote_lease_ttl)
            if worker.hub not in self.hubs:  # its heartbeats cannot be read now
                ttl = max(ttl, self.settings.unreachable_lease_ttl)
            # never shorter than three of the worker's own heartbeats
            ttl = max(ttl, 3 * (worker.heartbeat_interval or 0))
            reason = None
            session_end = False
            if worker.state == P.WorkerState.STOPPED.value:
                reason = "worker stopped"
            elif (why := self.ended(worker)) is not None:
                reason = why
            elif now - worker.last_seen > ttl:
                reason = f"no heartbeat for {now - worker.last_seen:.0f} s (lease {ttl:.0f} s)"
                session_end = self.session_ended(worker, now)
                if session_end:
                    reason += "; its session ended"
            if reason is None:
                continue
            held = [j for j in on_worker if j.worker_id == worker.id]
            self.on_gone(worker, held)  # e.g. a stopped local process is killed first
            self.store.mark_worker_gone(worker.id)
            log.info("worker %s gone: %s", worker.id, reason)
            if session_end:
                self.store.record_session_end(worker)
                self.planner.forget_sessions()
            for job in held:
                self.lose(job, reason, session_end)
            hub = self.hubs.get(worker.hub)
            if worker.state == P.WorkerState.STOPPED.value and hub is not None:
                try:
                    hub.delete(P.worker_dir(worker.id))
                except HubError as exc:
                    log.warning("could not remove stopped worker %s: %s", worker.id, exc)

    def session_ended(self, worker: WorkerInfo, now: float) -> bool:
        """Whether a silent ``worker`` is gone because its session ended: it lives in
        a session (Colab) and its hub's heartbeats were read this tick (a hub out of
        reach says nothing about the sessions on it)."""
        return worker.has_session and worker.hub in self.hubs and \
            self._read_at.get(worker.hub) == now

    def lose(self, job: Job, reason: str, session_end: bool = False) -> None:
        """Lease expired: LOST and re-queued (one transaction), then the assignment is
        withdrawn (fences a zombie). A job lost to as many session ends as the
        ``session_loss_limit`` setting says fails instead."""
        limit = self.settings.session_loss_limit
        try:
            done = self.store.lose(job.id, job.attempt, reason, session_end,
                                   3 if limit is None else limit)
        except IllegalTransitionError:
            return
        if done.state is S.FAILED:
            log.warning("%s failed: %s", job.id, done.error)
        self._withdraw(job)

    def rebalance(self, now: float) -> None:
        """Move the running jobs the planner says finish much sooner elsewhere (a
        probe that showed a long job on a slow worker): re-queued, they resume from
        their checkpoint where they were placed next."""
        running = self.store.jobs([S.RUNNING])
        if not running:
            return
        for job, reason in self.planner.moves(running, self.store.workers(),
                                              self.store.jobs(ON_WORKER), now):
            log.info("%s %s", job.id, reason)
            self.lose(job, reason)

    def repair(self) -> None:
        """Catch every hub up with the store (idempotent; cheap when nothing is off):
        rewrite the assignment of an ASSIGNED job whose inbox file and status are both
        missing, and withdraw inbox files of attempts that are no longer current."""
        on_worker = self.store.jobs(ON_WORKER)
        current = {(j.worker_id, j.id, j.attempt) for j in on_worker}
        for job in on_worker:
            hub = self.hubs.get(job.hub)
            if job.state is not S.ASSIGNED or job.worker_id is None or hub is None:
                continue
            try:
                if not hub.exists(P.inbox(job.worker_id, job.id, job.attempt)) and \
                        not hub.exists(P.status(job.id, job.attempt)):
                    log.info("re-writing the assignment of %s attempt %d", job.id,
                             job.attempt)
                    self.assigner.publish(job, hub)
                    self.assigner.write_assignment(job, job.worker_id, hub)
            except HubError as exc:
                log.warning("cannot repair the assignment of %s yet: %s", job.id, exc)
        for worker in self.store.workers():  # a gone worker that beats again is back here
            hub = self.hubs.get(worker.hub)
            if hub is None:
                continue
            try:
                for name in hub.list(P.inbox_dir(worker.id)):
                    parsed = P.parse_inbox_name(name)
                    if parsed and (worker.id, *parsed) not in current:
                        log.info("withdrawing stale assignment %s of %s", name, worker.id)
                        hub.delete(P.inbox(worker.id, *parsed))
            except HubError as exc:
                log.warning("cannot tidy the inbox of %s yet: %s", worker.id, exc)

    def pass_cancels(self) -> None:
        for job in self.store.jobs(ON_WORKER):
            hub = self.hubs.get(job.hub)
            if not job.cancel_requested or hub is None:
                continue
            try:
                if not hub.exists(P.cancel(job.id)):
                    hub.put_doc(P.cancel(job.id), P.Cancel(job_id=job.id, at=time.time()))
                    log.info("cancel marker written for %s", job.id)
            except HubError as exc:
                log.warning("cannot pass the cancel of %s on yet: %s", job.id, exc)
