"""No state is a dead end: the real scheduler and auto-pull, driven for thousands of
steps on a virtual clock against a hub that fails calls at random, with a daemon
that dies at random points (inside store transactions, between a commit and the hub
I/O after it, in the middle of hub calls) and restarts; workers that go silent,
come back as zombies, fail or succeed; a user who cancels. In the end every job has
ended in exactly one terminal state, exactly once, and every pulled model is the one
its final attempt made.

Workers here are protocol peers (they write the same signed-checked documents a
real worker writes, to the real folder hub); the real worker program is exercised
end to end elsewhere.
"""

from __future__ import annotations

import random
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from orchestrator import protocol as P
from orchestrator.bundle import BlobStore
from orchestrator.config import Project
from orchestrator.errors import HubError, OrchError, UsageError
from orchestrator.hubs.base import Hub, Watcher
from orchestrator.hubs.folder import FolderHub
from orchestrator.identity import load_identity
from orchestrator.models import TERMINAL, GpuNeed, JobSpec, JobState
from orchestrator.pull import AutoPull
from orchestrator.scheduler import Scheduler
from orchestrator.signing import verify
from orchestrator.store import Store

S = JobState
T = TypeVar("T")


class Crash(BaseException):
    """The daemon dies here, as with kill -9: nothing after this point of it runs."""


class Dice:
    """The faults of one run: hub calls fail (``fail``), the daemon dies in a hub call
    (``crash``) or at a transaction's edge (``tx_crash``); all off in the quiet end."""

    def __init__(self, rng: random.Random, fail: float, crash: float, tx_crash: float) -> None:
        self.rng, self.fail, self.crash, self.tx_crash = rng, fail, crash, tx_crash
        self.on = True

    def roll(self, rate: float) -> bool:
        return self.on and self.rng.random() < rate


class FaultyHub(Hub):
    """The folder hub as the daemon sees it: a call may fail (HubError), or the daemon
    may die in it, before or after the call took effect."""

    def __init__(self, inner: FolderHub, dice: Dice) -> None:
        self.inner, self.dice, self.url = inner, dice, inner.url

    def _call(self, op: Callable[[], T]) -> T:
        if self.dice.roll(self.dice.crash):
            if self.dice.rng.random() < 0.5:
                raise Crash()
            op()
            raise Crash()
        if self.dice.roll(self.dice.fail):
            raise HubError("injected hub outage")
        return op()

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(lambda: self.inner.put_bytes(key, data))

    def put_file(self, key: str, src: Path) -> None:
        self._call(lambda: self.inner.put_file(key, src))

    def get_bytes(self, key: str) -> bytes:
        return self._call(lambda: self.inner.get_bytes(key))

    def get_file(self, key: str, dest: Path) -> None:
        self._call(lambda: self.inner.get_file(key, dest))

    def exists(self, key: str) -> bool:
        return self._call(lambda: self.inner.exists(key))

    def list(self, prefix: str) -> list[str]:
        return self._call(lambda: self.inner.list(prefix))

    def delete(self, key: str) -> None:
        self._call(lambda: self.inner.delete(key))

    def local_path(self, key: str) -> Path | None:
        return None  # pulls download, through the faults

    def watch(self) -> Watcher:
        return Watcher()


class CrashyStore(Store):
    """The real store, but the daemon may die before a transaction, inside it (it
    rolls back), or right after it committed."""

    dice: Dice

    @contextmanager
    def tx(self) -> Iterator[Any]:
        if self.dice.roll(self.dice.tx_crash):
            raise Crash()
        with super().tx() as db:
            yield db
            if self.dice.roll(self.dice.tx_crash):
                raise Crash()
        if self.dice.roll(self.dice.tx_crash):
            raise Crash()


class SimWorker:
    """A worker as the protocol sees it: heartbeats, takes signed assignments, runs
    for a few steps, seals a result (checking its assignment first, as the real one
    does) or fails; it may go silent for a while and come back as a zombie."""

    def __init__(self, wid: str, hub: FolderHub, key: str, rng: random.Random) -> None:
        self.id, self.hub, self.key, self.rng = wid, hub, key, rng
        self.seq = 0
        self.run: tuple[str, int, int, bool] | None = None  # job, attempt, steps, succeeds
        self.silent = 0
        self.ran: list[tuple[str, int]] = []

    def beat(self) -> None:
        self.seq += 1
        job, n = (self.run[0], self.run[1]) if self.run else (None, None)
        self.hub.put_doc(P.heartbeat(self.id), P.Heartbeat(
            worker_id=self.id, name=self.id, host="sim", pid=None, seq=self.seq,
            state=P.WorkerState.BUSY if self.run else P.WorkerState.IDLE, job_id=job,
            attempt=n, capabilities=P.Capabilities(kind="local", heartbeat_interval=0.5)))

    def status(self, job: str, n: int, phase: P.Phase, error: str | None = None) -> None:
        self.hub.put_doc(P.status(job, n), P.RunStatus(job_id=job, attempt=n,
                                                       worker_id=self.id, phase=phase,
                                                       started_at=time.time(), error=error))

    def step(self, chaos: bool, work: Path) -> None:
        if self.silent:
            self.silent -= 1
            return
        if chaos and self.rng.random() < 0.03:
            self.silent = self.rng.randint(5, 30)  # stopped, partitioned, hung
            return
        self.beat()
        if self.run is None:
            self.take()
        else:
            self.advance(work)

    def take(self) -> None:
        for name in self.hub.list(P.inbox_dir(self.id)):
            parsed = P.parse_inbox_name(name)
            if parsed is None or parsed in self.ran:
                continue
            job, n = parsed
            assignment = self.hub.get_doc(P.inbox(self.id, job, n), P.Assignment)
            manifest = self.hub.get_doc(P.manifest(job), P.Manifest)
            if assignment is None or manifest is None:
                continue
            verify(assignment, self.key)
            verify(manifest, self.key)
            self.ran.append(parsed)
            self.status(job, n, P.Phase.RUNNING)
            self.run = (job, n, self.rng.randint(2, 12), self.rng.random() < 0.85)
            return

    def advance(self, work: Path) -> None:
        assert self.run is not None
        job, n, steps, succeeds = self.run
        if self.hub.exists(P.cancel(job)):
            self.status(job, n, P.Phase.CANCELLED)
            self.run = None
            return
        if steps > 1:
            self.run = (job, n, steps - 1, succeeds)
            return
        self.run = None
        if not self.hub.exists(P.inbox(self.id, job, n)):
            return  # superseded: writes nothing more
        if not succeeds:
            self.status(job, n, P.Phase.FAILED, error="simulated failure")
            return
        model = work / f"{job}.{n}"
        model.write_text(f"{job}.{n}")
        tar_path = work / f"{job}.{n}.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(model, arcname="0/model.bin")
        import hashlib

        sha = hashlib.sha256(tar_path.read_bytes()).hexdigest()
        self.hub.put_file(P.result_tar(job, n), tar_path)
        self.hub.put_doc(P.result_json(job, n), P.Seal(
            job_id=job, attempt=n, sha256=sha, size=tar_path.stat().st_size,
            files=(P.SealedFile("0/model.bin", model.stat().st_size),), sealed_at=time.time()))
        self.status(job, n, P.Phase.SUCCEEDED)


def spec(name: str, snapshot: str) -> JobSpec:
    return JobSpec(name=name, script="train.py", args=(), target="local", gpu=GpuNeed.ANY,
                   priority=0, estimate_s=None, snapshot_sha256=snapshot, data=(), outputs=(),
                   env=())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_job_ends_exactly_once_through_faults_and_crashes(project: Project,
                                                               tmp_path: Path,
                                                               seed: int) -> None:
    rng = random.Random(seed)
    dice = Dice(rng, fail=0.05, crash=0.0005, tx_crash=0.003)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print(1)\n")
    snapshot, _ = BlobStore(project.hub_dir / "blobs").add_tar(
        [("train.py", tmp_path / "src" / "train.py")])
    folder = FolderHub(project.hub_dir)
    key = load_identity(project.state_dir).key
    user = Store(project.db_path)
    jobs = [j.id for j in user.insert_jobs([spec(f"j{i}", snapshot) for i in range(10)])]
    work = tmp_path / "work"
    work.mkdir()
    workers = [SimWorker(f"w{i}", folder, key, rng) for i in range(4)]
    crashes = 0

    def daemon() -> tuple[Scheduler, AutoPull]:
        store = CrashyStore(project.db_path)
        store.dice = dice
        sched = Scheduler(project, store, FaultyHub(folder, dice))
        return sched, AutoPull(project, store)

    sched: Scheduler | None = None
    pulls: AutoPull | None = None
    now = 1_000_000.0
    for step in range(6000):
        chaos = step < 3000
        dice.on = chaos
        now += 0.5
        try:
            if sched is None or pulls is None:  # (re)started: recovery comes first
                sched, pulls = daemon()
                sched.recover(now)
            sched.tick(now)
            pulls.run(sched.hubs, now)
        except (HubError, OrchError):
            pass  # the daemon says so and ticks again
        except Crash:
            crashes += 1
            sched = pulls = None
        for w in workers:
            w.step(chaos, work)
        if chaos and rng.random() < 0.08:  # the user keeps submitting work
            jobs += [j.id for j in user.insert_jobs([spec(f"j{len(jobs)}", snapshot)])]
        if chaos and rng.random() < 0.02:
            live = [j for j in jobs[-30:] if user.get(j).state not in TERMINAL]
            try:
                user.cancel(rng.choice(live)) if live else None
            except UsageError:
                pass  # it ended meanwhile
        if not chaos and all(user.get(j).state in TERMINAL for j in jobs):
            break
    lost = sum(1 for j in jobs for e in user.events(j) if e.dst == "LOST")
    assert crashes > 20 and lost > 20, f"not much chaos: {crashes} crashes, {lost} leases lost"
    for j in jobs:
        job = user.get(j)
        assert job.state in TERMINAL, f"{j} stuck in {job.state.value} (dead end)"
        ends = [e for e in user.events(j) if e.dst in {s.value for s in TERMINAL}]
        assert len(ends) == 1, f"{j} ended {len(ends)} times: {[e.dst for e in ends]}"
        succeeded = [a for a in user.attempts(j) if a.outcome == "SUCCEEDED"]
        assert len(succeeded) <= 1, f"{j} succeeded twice"
        if job.state is S.PULLED:
            n = succeeded[0].n
            model = project.root / "models" / job.name / "model.bin"
            assert model.read_text() == f"{j}.{n}", "the pulled model is the final attempt's"
            assert n == job.attempt
        if job.state is S.CANCELLED:
            assert job.cancel_requested
