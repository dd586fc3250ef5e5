"""The scheduler tick against a real store and a real folder hub. Workers are
represented by the heartbeat files a worker writes (the protocol edge), so the
routing decisions can be checked deterministically."""

from __future__ import annotations

import time
from pathlib import Path

from orchestrator import protocol as P
from orchestrator.config import Project
from orchestrator.hubs.folder import FolderHub
from orchestrator.models import GpuNeed, JobState
from orchestrator.scheduler import Scheduler
from orchestrator.store import Store
from orchestrator.submit import SubmitRequest, submit

from .conftest import heartbeat

S = JobState


def beat(hub: FolderHub, wid: str, gpu: bool = False, seq: int = 1, state: str = "idle",
         kind: str = "local") -> None:
    hub.put_doc(P.heartbeat(wid), heartbeat(wid, seq=seq, state=state, kind=kind, gpu=gpu))


def report(hub: FolderHub, job_id: str, attempt: int, phase: str) -> None:
    """What the worker of ``attempt`` writes as its status."""
    hub.put_doc(P.status(job_id, attempt), P.RunStatus(
        job_id=job_id, attempt=attempt, worker_id="w", phase=P.Phase(phase), started_at=1.0))


def queue(project: Project, store: Store, name: str, **kw: object) -> str:
    (project.root / "train.py").write_text("print('x')\n")
    req = SubmitRequest(script=str(project.root / "train.py"), name=name, **kw)  # type: ignore[arg-type]
    return submit(project, req, store=store)[0].id


def assigned(store: Store) -> dict[str, str | None]:
    return {j.name: j.worker_id for j in store.jobs() if j.state is S.ASSIGNED}


def test_gpu_jobs_go_only_to_gpu_workers(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    queue(project, store, "needs-gpu", gpu=GpuNeed.REQUIRED)
    beat(hub, "cpu-1")
    sched.tick()
    assert assigned(store) == {}  # a CPU worker never takes a --gpu job
    beat(hub, "gpu-1", gpu=True)
    sched.tick()
    assert assigned(store) == {"needs-gpu": "gpu-1"}
    manifest = hub.get_json(P.manifest(store.resolve("needs-gpu").id))
    assert manifest is not None and manifest["gpu"] == "required"
    assert hub.list(P.inbox_dir("gpu-1")) == [f"{store.resolve('needs-gpu').id}.1.json"]


def test_cpu_jobs_prefer_cpu_workers_and_any_prefers_gpu(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    beat(hub, "cpu-1")
    beat(hub, "gpu-1", gpu=True)
    queue(project, store, "cpu-only", gpu=GpuNeed.NONE)
    queue(project, store, "either")
    Scheduler(project, store, hub).tick()
    assert assigned(store) == {"cpu-only": "cpu-1", "either": "gpu-1"}


def test_priority_then_submit_order(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    queue(project, store, "first")
    queue(project, store, "second")
    queue(project, store, "urgent", priority=5)
    order = []
    for seq in range(1, 4):
        beat(hub, f"w{seq}", seq=seq)
        sched.tick()
        order += [n for n in assigned(store) if n not in order]
    assert order == ["urgent", "first", "second"]


def test_one_job_per_worker_at_a_time(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    beat(hub, "w1")
    for n in ("a", "b"):
        queue(project, store, n)
    Scheduler(project, store, hub).tick()
    assert list(assigned(store)) == ["a"]
    assert store.resolve("b").state is S.QUEUED


def test_silent_worker_loses_its_job_after_the_lease(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    job_id = queue(project, store, "j")
    beat(hub, "w1", seq=1)
    now = time.time()
    sched.tick(now)
    assert store.get(job_id).state is S.ASSIGNED
    sched.tick(now + project.settings.lease_ttl - 1)  # still within the lease
    assert store.get(job_id).state is S.ASSIGNED
    sched.tick(now + project.settings.lease_ttl + 1)
    job = store.get(job_id)
    assert job.state is S.QUEUED and job.attempt == 2 and job.worker_id is None
    assert not hub.exists(P.inbox("w1", job_id, 1))  # withdrawn: fences the zombie
    moves = [e.dst for e in store.events(job_id) if e.dst]  # notes (placement) aside
    assert moves == ["QUEUED", "ASSIGNED", "LOST", "QUEUED"]


def test_advancing_heartbeat_keeps_the_lease(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    job_id = queue(project, store, "j")
    now = time.time()
    beat(hub, "w1", seq=1)
    sched.tick(now)
    for step in range(1, 5):  # the worker keeps beating; the daemon's clock runs on
        beat(hub, "w1", seq=1 + step, state="busy")
        sched.tick(now + step * project.settings.lease_ttl * 0.9)
    assert store.get(job_id).state is S.ASSIGNED


def test_recover_rewrites_an_assignment_lost_in_a_crash(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    job_id = queue(project, store, "j")
    beat(hub, "w1")
    sched.tick()
    hub.delete(P.inbox("w1", job_id, 1))  # as if the daemon died between store and hub
    Scheduler(project, store, hub).recover()
    assert hub.exists(P.inbox("w1", job_id, 1))
    assert store.get(job_id).attempt == 1


def test_cancel_request_becomes_a_marker_then_cancelled(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    job_id = queue(project, store, "j")
    beat(hub, "w1")
    sched.tick()
    assert store.cancel(job_id) == "cancelling"
    sched.tick()
    assert hub.exists(P.cancel(job_id))
    report(hub, job_id, 1, "cancelled")
    sched.tick()
    assert store.get(job_id).state is S.CANCELLED
    assert not hub.exists(P.cancel(job_id))


def test_status_of_an_old_attempt_is_ignored(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    job_id = queue(project, store, "j")
    beat(hub, "w1", seq=1)
    now = time.time()
    sched.tick(now)
    sched.tick(now + project.settings.lease_ttl + 1)  # lost → attempt 2 queued
    beat(hub, "w2", seq=1)
    sched.tick(now + project.settings.lease_ttl + 2)
    assert store.get(job_id).worker_id == "w2"
    # the zombie of attempt 1 reports success: it must not count
    report(hub, job_id, 1, "succeeded")
    hub.put_doc(P.result_json(job_id, 1), P.Seal(job_id=job_id, attempt=1, sha256="0" * 64,
                                                 size=0, files=(), sealed_at=1.0))
    sched.tick(now + project.settings.lease_ttl + 3)
    assert store.get(job_id).state is S.ASSIGNED


def test_remote_worker_is_never_judged_by_local_pids(project: Project, store: Store,
                                                     tmp_path: Path) -> None:
    hub = FolderHub(project.hub_dir)
    calls = []

    def ended(worker: object) -> str | None:
        calls.append(worker)
        return None

    sched = Scheduler(project, store, hub, ended=ended)
    beat(hub, "colab-1", kind="colab")
    sched.tick()
    assert calls and store.workers()[0].kind == "colab"


def colab_beat(hub: FolderHub, wid: str, session_left: float) -> None:
    hub.put_doc(P.heartbeat(wid), P.Heartbeat(
        worker_id=wid, name=wid, host="colab", pid=None, seq=1, state=P.WorkerState.IDLE,
        capabilities=P.Capabilities(kind="colab", gpu=True, gpu_name="Tesla T4",
                                    session_left=session_left)))


def test_a_long_job_skips_a_short_session_unless_it_checkpoints(project: Project,
                                                                store: Store) -> None:
    project = Project(project.root, project.settings.__class__(
        **{**project.settings.__dict__, "hub": "drive"}))
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    (project.root / "plain.py").write_text("print('no checkpoints')\n")
    (project.root / "resumable.py").write_text("from orchestrator.keras import callbacks\n")
    plain = submit(project, SubmitRequest(script=str(project.root / "plain.py"), on="colab",
                                          estimate="8h"), store=store)[0]
    resumable = submit(project, SubmitRequest(script=str(project.root / "resumable.py"),
                                              on="colab", estimate="8h"), store=store)[0]
    assert not plain.checkpoints and resumable.checkpoints
    # --estimate is the time on this machine's CPU: 8 h there is about 2 h on a T4
    colab_beat(hub, "colab-1", session_left=3600)  # one hour of session left
    sched.tick()
    assert store.get(plain.id).state is S.QUEUED  # would be cut off: waits for a longer one
    assert store.get(resumable.id).state is S.ASSIGNED  # resumes in the next session
    w = store.workers()[0]
    assert w.gpu_name == "Tesla T4" and w.time_left(w.last_seen + 60) == 3540


def test_a_lease_is_never_shorter_than_three_heartbeats(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    job_id = queue(project, store, "j")
    hub.put_doc(P.heartbeat("slow"), heartbeat("slow", heartbeat_interval=10.0))
    now = time.time()
    sched.tick(now)
    assert store.get(job_id).state is S.ASSIGNED
    sched.tick(now + project.settings.lease_ttl + 1)  # past the 4 s lease, within 3 beats
    assert store.get(job_id).state is S.ASSIGNED
    sched.tick(now + 31)
    assert store.get(job_id).state is S.QUEUED and store.get(job_id).attempt == 2
