"""Placement, simulated: the real scheduler (store, folder hubs, planner, placement)
on a virtual clock, with simulated workers, against other policies and a lower bound.

For each scenario it prints the makespan (submit of the first job to the end of the
last) of orch's placement ("finish-first"), `makespan / lower bound`, and the ratio
against all-local, round-robin and the fixed rule "an estimate over 10 minutes goes
to Colab". Goals: within 1.15x of the lower bound; at least 2x better than all-local
on the exam day; better than the fixed rule on the random mixes. It then times one
scheduler tick with 10,000 queued jobs and 50 workers (goal under 20 ms).

Scenarios (speeds relative to this laptop's CPU):
- exam day: 4 jobs (one of 2 minutes, three of 60-90 minutes, all checkpointing,
  estimates given), 1 local CPU, 2 Colab T4 (speed 4) that orch launches and that
  take 3 minutes to start, 12 h session cap, 90 minutes idle disconnect;
- random mix (seeds 1-3): 200 jobs of 1 minute to 2 hours (log-uniform), 80% with
  an estimate (within ±30%), the rest unknown (probed); 1 local GPU (speed 3), 4 Colab
  T4 (speed 4, 3 min start), 2 SSH hosts (speed 6, 20 s start).

Workers here are protocol peers on the virtual clock; the scheduler is the real one.
Run: .venv/bin/python bench/placement.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator import protocol as P
from orchestrator.bundle import BlobStore
from orchestrator.config import Project, load_settings
from orchestrator.hubs.folder import FolderHub
from orchestrator.models import TERMINAL, GpuNeed, JobSpec, JobState, WorkerInfo
from orchestrator.placement import Server
from orchestrator.places import Place
from orchestrator.places.colab import ColabPlace
from orchestrator.scheduler import Scheduler
from orchestrator.store import Store

DT = 5.0  # virtual seconds per step


@dataclass(frozen=True)
class Work:
    """A job as the simulator knows it: its true length on a speed-1 device."""

    name: str
    seconds: float
    epochs: int = 20
    estimate: float | None = None  # what the user says (None: unknown)


@dataclass(frozen=True)
class Kind:
    """A kind of worker: its place, GPU, speed, start-up and life."""

    place: str
    gpu: str | None
    speed: float
    startup: float = 0.0
    cap: float | None = None  # session cap (s)
    idle_limit: float | None = None  # disconnect after this long idle (s)


CPU = Kind("local", None, 1.0)
LOCAL_GPU = Kind("local", "RTX 3060", 3.0)
T4 = Kind("colab", "Tesla T4", 4.0, startup=180.0, cap=12 * 3600.0, idle_limit=90 * 60.0)
SSH = Kind("ssh", "RTX A5000", 6.0, startup=20.0)


class SimWorker:
    """A worker of ``kind`` on the virtual clock: runs a job for its length at the
    worker's speed, reporting epochs (so a probe learns), then seals it."""

    def __init__(self, wid: str, kind: Kind, hub: FolderHub, born: float,
                 works: dict[str, Work]) -> None:
        self.id, self.kind, self.hub, self.born, self.works = wid, kind, hub, born, works
        self.seq = 0
        self.run: tuple[str, int, float, float] | None = None  # job, attempt, start, length
        self.idle_since = born
        self.gone = False

    def step(self, now: float) -> None:
        if self.gone or now < self.born:
            return
        life = now - self.born
        if (self.kind.cap and life > self.kind.cap) or (
                self.kind.idle_limit and not self.run
                and now - self.idle_since > self.kind.idle_limit):
            self.gone = True  # session over: it just stops beating
            return
        self.seq += 1
        caps = P.Capabilities(kind=self.kind.place, gpu=self.kind.gpu is not None,
                              gpu_name=self.kind.gpu, heartbeat_interval=DT,
                              session_left=(self.kind.cap - life) if self.kind.cap else None)
        self.hub.put_doc(P.heartbeat(self.id), P.Heartbeat(
            worker_id=self.id, name=self.id, host="sim", pid=None, seq=self.seq,
            state=P.WorkerState.BUSY if self.run else P.WorkerState.IDLE, capabilities=caps))
        if self.run is None:
            for name in self.hub.list(P.inbox_dir(self.id)):
                parsed = P.parse_inbox_name(name)
                if parsed and not self.hub.exists(P.status(*parsed)):
                    job, n = parsed
                    manifest = self.hub.get_doc(P.manifest(job), P.Manifest)
                    assert manifest is not None
                    work = self.works[manifest.name]
                    self.run = (job, n, now, 8.0 + work.seconds / self.kind.speed)
                    break
        if self.run is not None:
            job, n, start, length = self.run
            work = self.works[self.hub.get_doc(P.manifest(job), P.Manifest).name]  # type: ignore[union-attr]
            done = min(work.epochs, int((now - start - 8.0) / (length - 8.0) * work.epochs)) \
                if now - start > 8.0 else 0
            progress = {"epochs": work.epochs, "completed_epochs": done,
                        "epoch_seconds": (length - 8.0) / work.epochs,
                        "mean_epoch_seconds": (length - 8.0) / work.epochs,
                        "eta_s": max(0.0, start + length - now)}
            phase = P.Phase.SUCCEEDED if now >= start + length else P.Phase.RUNNING
            if phase is P.Phase.SUCCEEDED:
                self.hub.put_bytes(P.result_tar(job, n), b"model")
                self.hub.put_doc(P.result_json(job, n), P.Seal(
                    job_id=job, attempt=n, sha256="0" * 64, size=5, files=(), sealed_at=now))
            self.hub.put_doc(P.status(job, n), P.RunStatus(
                job_id=job, attempt=n, worker_id=self.id, phase=phase, started_at=start,
                progress=progress, ended_at=now if phase is P.Phase.SUCCEEDED else None))
            if phase is P.Phase.SUCCEEDED:
                self.run = None
                self.idle_since = now


class SimColab(ColabPlace):
    """orch's Colab place, launching simulated sessions instead of real ones."""

    def __init__(self, project: Project, sim: Simulation) -> None:
        super().__init__(project)
        self.sim = sim

    def owns(self, worker: WorkerInfo) -> bool:
        return worker.kind == "colab"

    def start_workers(self, waiting: Mapping[str, int], workers: Sequence[WorkerInfo]) -> None:
        need = min(self.wanted, self._room(workers, self.sim.now)) - len(self.pending)
        for _ in range(max(0, need)):
            self.launch()
            self.pending.append(self.sim.now)

    def launch(self) -> str:
        self.sim.spawn(T4, self.sim.now + T4.startup)
        return "simulated"


class Fixed(Place):
    """Workers that are simply there (a local slot, an SSH host)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def owns(self, worker: WorkerInfo) -> bool:
        return worker.kind == self.name

    def can_run(self, job: object) -> bool:
        return True

    def how_soon(self, job: object, workers: Sequence[WorkerInfo]) -> object:  # type: ignore[override]
        return None

    def prospects(self, workers: Sequence[WorkerInfo], now: float) -> list[Server]:
        return []


class Simulation:
    def __init__(self, root: Path, works: list[Work], fixed: list[Kind], colab: int,
                 policy: str) -> None:
        (root / "orch.toml").write_text(
            f'colab_workers = {colab}\ncolab_startup = "{T4.startup:.0f}s"\nlease_ttl = "1h"\n'
            f'remote_lease_ttl = "1h"\nupload_rate = 5e6\n')
        self.project = Project(root, load_settings(root, environ={}))
        self.project.init()
        self.store = Store(self.project.db_path)
        self.local = FolderHub(self.project.hub_dir)
        self.remote = FolderHub(root / "remote-hub")
        self.works = {w.name: w for w in works}
        self.now = 0.0
        self.workers: list[SimWorker] = []
        places: list[Place] = [Fixed("local"), Fixed("ssh")]
        if colab:
            places.append(SimColab(self.project, self))
        self.scheduler = Scheduler(self.project, self.store,
                                   {"local": self.local, "remote": self.remote},
                                   places=places, policy=policy)
        for kind in fixed:
            self.spawn(kind, kind.startup)
        src = root / "src.py"
        src.write_text("print(1)\n")
        snapshot, _ = BlobStore(self.project.hub_dir / "blobs").add_tar([("train.py", src)])
        self.store.insert_jobs([JobSpec(
            name=w.name, script="train.py", args=("--epochs", str(w.epochs), "--id", w.name),
            target="auto", gpu=GpuNeed.ANY, priority=0, estimate_s=w.estimate,
            snapshot_sha256=snapshot, data=(), outputs=(), env=(), checkpoints=True)
            for w in works])

    def spawn(self, kind: Kind, born: float) -> None:
        hub = self.remote if kind.place == "colab" else self.local
        self.workers.append(SimWorker(f"{kind.place}-{len(self.workers)}", kind, hub, born,
                                      self.works))

    def run(self, limit: float = 7 * 86400.0) -> float:
        """Step until every job ended; the makespan (virtual seconds)."""
        while self.now < limit:
            for w in self.workers:
                w.step(self.now)
            self.scheduler.tick(self.now)
            for place in self.scheduler.places:
                place.start_workers(self.store.queued_targets(), self.store.workers())
            if not any(self.store.has_jobs([s]) for s in JobState if s not in TERMINAL
                       and s is not JobState.SUCCEEDED):
                return self.now
            self.now += DT
        raise SystemExit("the simulation did not finish")


def lower_bound(works: list[Work], fixed: list[Kind], colab: int) -> float:
    """No placement can finish sooner, even knowing every job's true length. Up to 8
    jobs: the best assignment, tried exhaustively (a machine's time is its start-up
    plus its jobs' 8 s overhead and run time). More: the largest of the longest job on
    its best machine and the time T by which the machines' capacity,
    sum(speed × (T - start-up)), covers all the work plus each job's overhead."""
    kinds = [*fixed, *([T4] * colab)]
    if len(works) <= 8:
        best = math.inf
        for assignment in itertools.product(range(len(kinds)), repeat=len(works)):
            ends = [k.startup for k in kinds]
            for work, m in zip(works, assignment):
                ends[m] += 8.0 + work.seconds / kinds[m].speed
            best = min(best, max(ends))
        return best
    longest = max(min(k.startup + 8.0 + w.seconds / k.speed for k in kinds) for w in works)
    need = sum(w.seconds + 8.0 * min(k.speed for k in kinds) for w in works)
    lo, hi = 0.0, need  # capacity grows with T: bisect for the T that covers the need
    for _ in range(60):
        mid = (lo + hi) / 2
        if sum(k.speed * max(0.0, mid - k.startup) for k in kinds) >= need:
            hi = mid
        else:
            lo = mid
    return max(longest, hi)


def simulate(works: list[Work], fixed: list[Kind], colab: int, policy: str) -> float:
    if policy == "local":
        fixed = [k for k in fixed if k.place == "local"]
        colab = 0
    with tempfile.TemporaryDirectory() as tmp:
        return Simulation(Path(tmp), works, fixed, colab, policy).run()


def exam_day() -> tuple[list[Work], list[Kind], int]:
    works = [Work("quick", 120.0, estimate=120.0), Work("images", 75 * 60.0, estimate=75 * 60.0),
             Work("text", 90 * 60.0, estimate=90 * 60.0),
             Work("series", 60 * 60.0, estimate=60 * 60.0)]
    return works, [CPU], 2


def random_mix(seed: int, n: int = 200) -> tuple[list[Work], list[Kind], int]:
    rng = random.Random(seed)
    works = []
    for i in range(n):
        seconds = math.exp(rng.uniform(math.log(60), math.log(7200)))
        known = rng.random() < 0.8
        works.append(Work(f"j{i}", seconds, estimate=seconds * rng.uniform(0.7, 1.3)
                          if known else None))
    return works, [LOCAL_GPU, SSH, SSH], 4


def tick_time() -> tuple[float, float]:
    """(median ms of a steady tick, median ms of a tick that plans) with 10,000 queued
    jobs and 50 live workers whose heartbeats all change every tick."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "orch.toml").write_text("lease_ttl = \"1h\"\n")
        project = Project(root, load_settings(root, environ={}))
        project.init()
        store = Store(project.db_path)
        hub = FolderHub(project.hub_dir)
        store.insert_jobs([JobSpec(name=f"q{i}", script="train.py", args=(), target="auto",
                                   gpu=GpuNeed.REQUIRED, priority=0, estimate_s=600.0,
                                   snapshot_sha256="0" * 64, data=(), outputs=(), env=())
                           for i in range(10_000)])
        sched = Scheduler(project, store, hub, places=[Fixed("local")])

        def beat(seq: int) -> None:
            for i in range(50):
                hub.put_doc(P.heartbeat(f"w{i}"), P.Heartbeat(
                    worker_id=f"w{i}", name=f"w{i}", host="h", pid=None, seq=seq,
                    state=P.WorkerState.IDLE, capabilities=P.Capabilities(kind="local")))

        beat(1)
        sched.tick(1.0)  # the CPU workers cannot take GPU jobs: nothing is assigned
        times = []
        for k in range(2, 22):
            beat(k)
            t0 = time.perf_counter()
            sched.tick(float(k))
            times.append(time.perf_counter() - t0)
        plans = []
        for k in range(30, 40):
            beat(k)
            sched.assigner.seen = None  # as after a change: it plans again
            t0 = time.perf_counter()
            sched.tick(float(k))
            plans.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000, statistics.median(plans) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one random seed, 60 jobs")
    args = parser.parse_args()
    scenarios = [("exam day", exam_day())]
    for seed in ([1] if args.quick else [1, 2, 3]):
        scenarios.append((f"random mix, seed {seed}", random_mix(seed, 60 if args.quick
                                                                  else 200)))
    policies = ["finish-first", "local", "round-robin", "rule"]
    for title, (works, fixed, colab) in scenarios:
        lb = lower_bound(works, fixed, colab)
        spans = {p: simulate(works, fixed, colab, p) for p in policies}
        ours = spans["finish-first"]
        print(f"\n{title}: {len(works)} jobs; lower bound {lb / 60:.1f} min")
        for policy, span in spans.items():
            print(f"  {policy:13s} makespan {span / 60:7.1f} min  "
                  f"{span / lb:5.2f}× the lower bound  "
                  f"{span / ours:5.2f}× orch's placement")
    steady, planning = tick_time()
    print(f"\nscheduler tick, 10,000 queued jobs and 50 workers: {steady:.1f} ms steady, "
          f"{planning:.1f} ms when it plans (goal < 20 ms)")


if __name__ == "__main__":
    main()
