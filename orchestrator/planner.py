"""The scheduler's side of placement: gather what :func:`placement.plan` needs
from the store and the places (servers, estimates, speeds, transfer times), keep
each queued job's decision, and learn from every finished attempt.

Only the first jobs of the queue are planned (a few per server): the rest could not
start before them anyway, so a queue of 10,000 costs what a queue of 100 does.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from .estimates import (
    UNKNOWN_RUN,
    Estimate,
    Run,
    device_of,
    estimate,
    learn_speeds,
    positive,
    run_device,
    speed,
    workload,
)
from .models import GpuNeed, Job, WorkerInfo
from .placement import Decision, Server, plan
from .places import target_allows
from .sessions import SessionLengths, learned

if TYPE_CHECKING:
    from .config import Project
    from .places import Place
    from .store import Store

log = logging.getLogger(__name__)

PLAN_PER_SERVER = 3  # queued jobs planned per server (at least PLAN_MIN)
MOVE_GAIN = 0.6  # a probed job moves when another worker needs under this share of the time
MOVE_MIN = 60.0  # ... and saves at least this many seconds
PLAN_MIN = 20
MIN_RATE = 1e5  # bytes/s assumed for sending to a remote hub when nothing says better
OVERRUN = 0.25  # a job past its estimate is assumed to need this share of its time so far


class Planner:
    def __init__(self, project: Project, store: Store, places: Sequence[Place],
                 policy: str = "finish-first") -> None:
        self.project = project
        self.store = store
        self.places = places
        self.policy = policy
        self._runs: list[Run] | None = None
        self._speeds: dict[str, float] = {}
        self._looked_at: set[tuple[str, int]] = set()  # running attempts moves() judged
        self._sessions: SessionLengths | None = None

    # ---- what was learned -----------------------------------------------------------

    def history(self) -> tuple[list[Run], dict[str, float]]:
        if self._runs is None:
            self._runs = self.store.runs()
            self._speeds = learn_speeds(self._runs)
        return self._runs, self._speeds

    def learn(self, job: Job, worker: WorkerInfo | None, now: float,
              finished: bool = True) -> None:
        """Remember what ``job``'s attempt took on ``worker`` until ``now``: its whole
        run (``finished``), or, for a probe that moves, what its first epochs say the
        whole run would take there. Figures a script reported that make no sense
        (zero, negative, not numbers) are left out."""
        progress = job.progress
        if worker is None or job.started_at is None:
            return
        per_epoch = positive(progress.get("mean_epoch_seconds")) or positive(
            progress.get("epoch_seconds"))
        done, total = progress.get("completed_epochs"), progress.get("epochs")
        epochs = done if isinstance(done, int) and done > 0 else None
        seconds = max(0.0, now - job.started_at)
        if not finished:
            if per_epoch is None or epochs is None or not isinstance(total, int) \
                    or total < epochs:
                return
            seconds, epochs = seconds + (total - epochs) * per_epoch, total
        run = Run(workload=workload(job.script, job.args)[0],
                  device=run_device(job.gpu, device_of(worker.kind, worker.gpu,
                                                       worker.gpu_name)),
                  epochs=epochs, epoch_seconds=per_epoch, seconds=seconds,
                  gpu_mem_mb=positive(progress.get("gpu_mem_peak_mb")))
        self.store.record_run(job.id, job.attempt, run)
        self._runs = None  # learn again on the next plan

    def sessions(self) -> SessionLengths:
        """How long sessions last, learned from the sessions that ended."""
        if self._sessions is None:
            self._sessions = learned(self.store.session_ends())
        return self._sessions

    def forget_sessions(self) -> None:
        """A session ended: learn again on the next plan."""
        self._sessions = None

    def session_end(self, worker: WorkerInfo, now: float) -> tuple[float | None, str]:
        """When ``worker``'s session likely ends (seconds from ``now``; None: it has
        none), and how that was figured: the sooner of its own cap and what the
        sessions of its account (else the project's) lasted, at its age."""
        own = worker.time_left(now)
        if not worker.has_session:
            return own, ""
        figure = self.sessions().left(worker.account, worker.session_age_at(now) or 0.0)
        if own is not None and own <= figure.seconds:
            return own, "its own cap"
        return figure.seconds, figure.how

    def memory(self, job: Job) -> float | None:
        """GPU memory ``job`` needs (MB): its ``--gpu-mem``, else the most an earlier
        run of its workload used (measured at its first epoch), else unknown."""
        if job.gpu is GpuNeed.NONE:
            return 0.0  # --cpu: it runs with the GPU hidden
        if job.gpu_mem_mb:
            return job.gpu_mem_mb
        key = workload(job.script, job.args)[0]
        seen = [r.gpu_mem_mb for r in self.history()[0] if r.workload == key and r.gpu_mem_mb]
        return max(seen) if seen else None

    def estimate_of(self, job: Job, device: str | None = None) -> Estimate:
        runs, speeds = self.history()
        return estimate(job.script, job.args, job.estimate_s, runs, speeds,
                        job.progress if device else None, device)

    # ---- servers ----------------------------------------------------------------------

    def place_of(self, worker: WorkerInfo) -> str:
        return next((p.name for p in self.places if p.owns(worker)), worker.kind)

    def remaining(self, job: Job, worker: WorkerInfo, now: float) -> float:
        """Seconds from ``now`` until ``job`` (on ``worker``) is expected to end."""
        eta = positive(job.progress.get("eta_s"))
        if eta is not None and job.progress.get("completed_epochs"):
            return eta
        device = run_device(job.gpu, device_of(worker.kind, worker.gpu, worker.gpu_name))
        seconds = self.estimate_of(job, device).seconds_at(speed(self.history()[1], device))
        elapsed = max(0.0, now - (job.started_at or now))
        left = (seconds if seconds is not None else UNKNOWN_RUN) - elapsed
        return max(left, OVERRUN * elapsed)  # one that overran is not about to end

    def servers(self, workers: Sequence[WorkerInfo], on_worker: Sequence[Job],
                now: float) -> list[Server]:
        """Every slot of every live worker (ready now, or when its job ends), then the
        workers places would start."""
        out: list[Server] = []
        for w in workers:
            if w.state == "stopped":
                continue
            held = sorted(self.remaining(j, w, now) for j in on_worker if j.worker_id == w.id)
            device = device_of(w.kind, w.gpu, w.gpu_name)
            ends_in, how = self.session_end(w, now)
            for slot in range(max(1, w.slots)):
                out.append(Server(
                    key=w.id if w.slots <= 1 else f"{w.id}#{slot}", place=self.place_of(w),
                    device=device, worker=w, ready_in=held[slot] if slot < len(held) else 0.0,
                    remote=w.hub != "local", ends_in=ends_in, session=how))
        for place in self.places:
            out += [self.prospect(s) for s in place.prospects(workers, now)]
        return out

    def prospect(self, server: Server) -> Server:
        """A worker a place would start, its session's end as learned (a new session
        of the project's: the account is not known before it joins)."""
        if not server.worker.has_session:
            return server
        figure = self.sessions().left(None, 0.0)
        ends = server.ready_in + figure.seconds
        if server.ends_in is not None and server.ends_in < ends:
            return server
        return dataclasses.replace(server, ends_in=ends, session=figure.how)

    def transfer(self, job: Job, server: Server) -> float:
        """Seconds to send the job's code and data to a remote server's hub."""
        blobs = self.project.hub_dir / "blobs"
        size = sum(d.size for d in job.data)
        try:
            size += (blobs / job.snapshot_sha256).stat().st_size
        except OSError:
            pass
        return size / max(MIN_RATE, self.project.settings.upload_rate)

    # ---- planning ------------------------------------------------------------------

    @staticmethod
    def head_size(servers: Sequence[Server]) -> int:
        """How many jobs at the head of the queue are planned (the rest wait)."""
        return max(PLAN_MIN, PLAN_PER_SERVER * len(servers))

    def decide(self, queued: Sequence[Job], servers: Sequence[Server],
               now: float) -> list[Decision]:
        """A decision for each of ``queued`` (the head of the queue, in order) among
        ``servers`` (:meth:`servers`); each one that changed is kept on its job (and
        said in its history)."""
        if not servers or not queued:
            return []
        head = list(queued[:self.head_size(servers)])
        estimates = {j.id: self.estimate_of(j) for j in head}
        decisions = plan(head, servers, estimates, self.history()[1], self.transfer,
                         allows, self.policy)
        self.store.keep_placements([kept for job, decision in zip(head, decisions)
                                    if (kept := self.kept(job, decision, now)) is not None])
        return decisions

    def moves(self, running: Sequence[Job], workers: Sequence[WorkerInfo],
              on_worker: Sequence[Job], now: float) -> list[tuple[Job, str]]:
        """The probe's second half: a running job that started with no estimate has
        now timed its first epoch. If it checkpoints, and a free worker would finish it
        in well under (MOVE_GAIN) the time its own needs, it moves there: it is
        re-queued and resumes from its checkpoint. Each attempt is looked at once."""
        runs = self.history()[0]
        free = [s for s in self.servers(workers, on_worker, now)
                if s.live and s.ready_in <= 1.0]
        by_id = {w.id: w for w in workers}
        out = []
        for job in running:
            done = job.progress.get("completed_epochs") or 0
            total = job.progress.get("epochs") or 0
            worker = by_id.get(job.worker_id or "")
            if (not job.checkpoints or not done or done >= total or worker is None
                    or (job.id, job.attempt) in self._looked_at):
                continue
            self._looked_at.add((job.id, job.attempt))
            key = workload(job.script, job.args)[0]
            if job.estimate_s or any(r.workload == key for r in runs):
                continue  # it was placed knowing its length
            device = run_device(job.gpu, device_of(worker.kind, worker.gpu, worker.gpu_name))
            est = self.estimate_of(job, device)
            here = est.seconds_at(speed(self.history()[1], device))
            options = [((self.transfer(job, s) if s.remote else 0.0)
                        + (est.seconds_at(speed(self.history()[1], run_device(job.gpu, s.device)))
                           or 0.0), s)
                       for s in free if allows(job, s.worker) and s.key != worker.id]
            if here is None or not options:
                continue
            there, server = min(options, key=lambda o: o[0])
            if there < MOVE_GAIN * here and here - there > MOVE_MIN:
                self.learn(job, worker, now, finished=False)  # what its first epochs showed
                out.append((job, f"moved: {server.key} finishes it in ~{there:.0f} s, "
                                 f"here ~{here:.0f} s"))
        return out

    @staticmethod
    def kept(job: Job, decision: Decision, now: float) -> tuple[str, str, str | None] | None:
        """What to keep of ``decision`` for ``job`` (:meth:`Store.keep_placements`):
        None if it did not change; a note for the job's history when its choice or
        its estimate did. A decision an older orch kept is simply replaced."""
        try:
            old = Decision.from_json(job.placement) if job.placement else None
        except (ValueError, TypeError, KeyError):
            old = None
        if old is not None and dataclasses.replace(old, at=0.0) == decision:
            return None
        chosen = decision.choice.server if decision.choice else None
        changed = old is None or (old.choice.server if old.choice else None) != chosen \
            or old.estimate != decision.estimate
        return (job.id, dataclasses.replace(decision, at=now).to_json(),
                decision.summary() if changed else None)


def allows(job: Job, worker: WorkerInfo) -> bool:
    """Whether ``worker`` may take ``job`` at all: its --on and --gpu."""
    return kind_allows(job.target, job.gpu, worker)


def kind_allows(target: str, gpu: GpuNeed, worker: WorkerInfo) -> bool:
    """Whether ``worker`` may take jobs of this ``--on`` target and GPU need."""
    return target_allows(target, worker) and (gpu is not GpuNeed.REQUIRED or worker.gpu)


def placeable(kinds: Iterable[tuple[str, GpuNeed]],
              servers: Sequence[Server]) -> set[tuple[str, GpuNeed]]:
    """The (``--on`` target, GPU need) pairs some server may take: only queued jobs
    of these are planned, so jobs nobody can take never hold back those behind."""
    return {(target, gpu) for target, gpu in kinds
            if any(kind_allows(target, gpu, s.worker) for s in servers)}


def fits_memory(job: Job, worker: WorkerInfo, on_worker: Sequence[Job],
                memory: Callable[[Job], float | None], headroom: float = 0.9) -> bool:
    """Whether ``job`` fits beside what ``worker`` already runs: within its slots and,
    for a worker that packs jobs onto its GPU, while the jobs' memory (``--gpu-mem``,
    or measured by an earlier run) stays within ``headroom`` of the GPU's; a job of
    unknown memory runs on such a GPU only alone (its first run measures it)."""
    others = [j for j in on_worker if j.worker_id == worker.id]
    if not others:
        return True
    if len(others) >= worker.slots:
        return False
    if worker.gpu_mem_mb is None:
        return True  # slots without a memory to share (CPU slots)
    needs = [memory(j) for j in [*others, job]]
    if any(n is None for n in needs):
        return False
    return sum(n for n in needs if n is not None) <= headroom * worker.gpu_mem_mb
