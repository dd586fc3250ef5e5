"""Placement at its edges: a queue head nobody can take, figures a script reported
that make no sense, Colab sessions that do not come, `--cpu` jobs on GPU machines,
jobs that overrun their estimate, GPUs of unknown memory, decisions an older orch
kept, a failed publish, and a v5 store's workers."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import protocol as P
from orchestrator.assign import REPLAN
from orchestrator.config import Project, load_settings
from orchestrator.errors import HubError, LaunchError
from orchestrator.estimates import Run, estimate, learn_speeds, speed
from orchestrator.hubs.folder import FolderHub
from orchestrator.models import GpuNeed, JobState
from orchestrator.placement import Server, plan
from orchestrator.places.colab import BACKOFF, ColabPlace
from orchestrator.places.local import local_slots
from orchestrator.planner import Planner, allows
from orchestrator.scheduler import Scheduler
from orchestrator.schema import MIGRATIONS
from orchestrator.store import Store

from .conftest import beat, job, queue, run_orch, worker

S = JobState


def test_jobs_nobody_can_take_do_not_hold_back_those_behind(project: Project,
                                                            store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    beat(hub, "cpu-1")
    stuck = [queue(project, store, f"g{i}", gpu=GpuNeed.REQUIRED, priority=5) for i in range(30)]
    behind = queue(project, store, "cpu-job")
    sched.tick()
    assert store.get(behind.id).worker_id == "cpu-1"
    assert all(store.get(j.id).state is S.QUEUED for j in stuck)


@pytest.mark.parametrize("bad", [0.0, -2.0, math.nan, math.inf])
def test_figures_that_make_no_sense_are_not_learned(bad: float) -> None:
    runs = [Run("a.py", "cpu:local", 5, 10.0, 60.0), Run("a.py", "gpu:Tesla T4", 5, bad, 15.0)]
    speeds = learn_speeds(runs)  # no math domain error, no division by zero
    assert speed(speeds, "gpu:Tesla T4") == 4.0  # nothing to learn from: the prior
    only_bad = estimate("a.py", (), None, [runs[1]], speeds)
    assert not only_bad.known
    probe = estimate("b.py", (), None, [], speeds, {"epochs": 10, "completed_epochs": 1,
                                                    "epoch_seconds": bad}, "cpu:local")
    assert not probe.known


def test_a_run_reporting_nonsense_is_recorded_without_it(project: Project,
                                                         store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    beat(hub, "cpu-1")
    j = queue(project, store, "odd")
    sched.tick()
    hub.put_doc(P.status(j.id, 1), P.RunStatus(
        job_id=j.id, attempt=1, worker_id="cpu-1", phase=P.Phase.SUCCEEDED, started_at=10.0,
        ended_at=40.0, progress={"epochs": 3, "completed_epochs": 3, "epoch_seconds": -5,
                                 "gpu_mem_peak_mb": "lots"}))
    hub.put_doc(P.result_json(j.id, 1), P.Seal(job_id=j.id, attempt=1, sha256="0" * 64,
                                               size=0, files=(), sealed_at=40.0))
    sched.tick()
    (run,) = store.runs()
    assert (run.epochs, run.epoch_seconds, run.gpu_mem_mb, run.seconds) == (3, None, None, 30.0)
    again = queue(project, store, "odd")
    sched.tick()  # plans with that history: no error
    assert store.get(again.id).worker_id == "cpu-1"


class FailingColab(ColabPlace):
    """orch's Colab place whose launch (Google's `colab` CLI) fails, or starts
    sessions that never join."""

    def __init__(self, project: Project, fail: bool) -> None:
        super().__init__(project)
        self.fail, self.launched = fail, 0

    def launch(self) -> str:
        if self.fail:
            raise LaunchError("colab: not signed in")
        self.launched += 1
        return f"session-{self.launched}"


def colab_project(root: Path) -> Project:
    (root / "orch.toml").write_text('hub = "drive:orch-hub/x"\ncolab_workers = 2\n')
    return Project(root, load_settings(root, environ={}))


@pytest.mark.parametrize("fail", [True, False])
def test_colab_sessions_that_do_not_come_are_not_waited_for(tmp_path: Path, fail: bool,
                                                            caplog: Any) -> None:
    place = FailingColab(colab_project(tmp_path), fail)
    now = time.time()
    assert len(place.prospects([], now)) == 2
    place.want(["colab-1 (to start)", "colab-1 (to start)"])  # one server, named twice
    place.start_workers(frozenset({"auto"}), [])
    if fail:
        assert "cannot launch a Colab session: colab: not signed in" in caplog.text
    else:
        assert place.launched == 1
        startup = place.project.settings.colab_startup
        now = time.time() + 3 * startup + 1  # it never joined
    assert place.prospects([], now) == []  # the plan stops counting on Colab
    assert len(place.prospects([], now + BACKOFF + 1)) == 2  # and tries again later


def test_a_cpu_job_on_a_gpu_machine_runs_at_cpu_speed_and_takes_no_gpu_memory(
        project: Project, store: Store) -> None:
    gpu = Server("gpu-1", "local", "gpu:Tesla T4", worker("gpu-1", gpu="Tesla T4"))
    cpu_only = job("cpu-only", 600.0, gpu="none")
    est = {cpu_only.id: estimate(cpu_only.script, (), 600.0, [], {})}
    (decision,) = plan([cpu_only], [gpu], est, {}, lambda j, s: 0.0, allows)
    assert decision.choice is not None and decision.choice.run == 600.0  # not 150 s
    assert Planner(project, store, []).memory(cpu_only) == 0.0


def test_a_job_past_its_estimate_is_not_about_to_end(project: Project, store: Store) -> None:
    planner = Planner(project, store, [])
    now = time.time()
    late = job("late", 240.0)  # 4 minutes expected, running for an hour
    late = type(late)(**{**late.__dict__, "state": S.RUNNING, "started_at": now - 3600,
                         "worker_id": "cpu-1"})
    assert planner.remaining(late, worker("cpu-1"), now) == pytest.approx(900.0)


def test_the_plan_is_made_again_as_time_passes(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    beat(hub, "gpu-1", gpu=True, gpu_name="Tesla T4")
    first = queue(project, store, "first", estimate="20m")
    # just past the start of a REPLAN period (the planner plans again once in each):
    # now + 2 falls in the same period, now + 61 in the next
    now = (time.time() // REPLAN) * REPLAN + 1
    sched.tick(now)
    hub.put_doc(P.status(first.id, 1), P.RunStatus(
        job_id=first.id, attempt=1, worker_id="gpu-1", phase=P.Phase.RUNNING, started_at=now))
    second = queue(project, store, "second", estimate="20m")
    sched.tick(now)

    def planned() -> tuple[float, float]:
        doc = json.loads(store.get(second.id).placement or "{}")
        return doc["at"], doc["choice"]["start_in"]

    assert planned() == (now, pytest.approx(300.0))  # after the first: 20 min on a T4
    for later in (now + 2, now + 61):
        beat(hub, "gpu-1", gpu=True, gpu_name="Tesla T4")  # the worker lives on
        sched.tick(later)
        if later == now + 2:
            assert planned() == (now, pytest.approx(300.0))  # nothing changed: not planned
    assert planned() == (now + 61, pytest.approx(300.0 - 61))  # planned again all the same


def test_a_gpu_of_unknown_memory_runs_one_job_at_a_time(tmp_path: Path) -> None:
    (tmp_path / "orch.toml").write_text('gpus = "3"\ngpu_jobs = 4\n')  # no nvidia-smi here
    (slot,) = [s for s in local_slots(Project(tmp_path, load_settings(tmp_path, environ={})))
               if s.gpu is not None]
    assert slot.gpu_mem_mb is None and slot.jobs == 1


def test_a_decision_an_older_orch_kept_is_replaced(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    j = queue(project, store, "old", gpu=GpuNeed.REQUIRED)
    with store.tx() as db:
        db.execute("UPDATE jobs SET placement=? WHERE id=?", ('{"from": "the future"}', j.id))
    out = run_orch(project.root, "explain", "old", check=True).stdout
    assert "not placed yet" in out
    beat(hub, "gpu-1", gpu=True, gpu_name="Tesla T4")
    sched.tick()
    assert store.get(j.id).worker_id == "gpu-1"


class OneFailedPublish(FolderHub):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failures = 1

    def put_bytes(self, key: str, data: bytes) -> None:
        if key.endswith("manifest.json") and self.failures:
            self.failures -= 1
            raise HubError("injected outage")
        super().put_bytes(key, data)


def test_a_failed_publish_is_tried_again_on_the_next_tick(project: Project,
                                                          store: Store) -> None:
    hub = OneFailedPublish(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    beat(hub, "cpu-1")
    j = queue(project, store, "j")
    now = time.time()
    sched.tick(now)
    assert store.get(j.id).state is S.QUEUED
    sched.tick(now + 1)  # nothing else changed
    assert store.get(j.id).worker_id == "cpu-1"


def test_workers_of_a_v5_store_keep_what_their_heartbeat_said(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    con = sqlite3.connect(db)
    for step in MIGRATIONS[:5]:
        con.executescript(step)
    info = P.Heartbeat(worker_id="w", name="w", host="h", pid=None, seq=3,
                       state=P.WorkerState.IDLE, capabilities=P.Capabilities(
                           kind="colab", heartbeat_interval=7.0, slots=2)).to_json().decode()
    con.execute("INSERT INTO workers (id, name, kind, host, state, last_seen, info) "
                "VALUES ('w', 'w', 'colab', 'h', 'idle', 1.0, ?)", (info,))
    con.execute("INSERT INTO workers (id, name, kind, host, state, last_seen, info) "
                "VALUES ('v', 'v', 'local', 'h', 'idle', 1.0, 'not json')")
    con.execute("PRAGMA user_version = 5")
    con.commit()
    con.close()
    with Store(db) as store:
        workers = {w.id: w for w in store.workers()}
    assert (workers["w"].heartbeat_interval, workers["w"].slots) == (7.0, 2)
    assert (workers["v"].heartbeat_interval, workers["v"].slots) == (None, 1)


def test_a_per_job_worker_takes_its_job_only_and_a_worker_out_of_reach_takes_none(
        project: Project, store: Store, tmp_path: Path) -> None:
    """A worker started for one job (`--job`) is given that job even when another is
    ahead in the queue, and never another; a worker whose hub the daemon cannot reach
    now is not planned onto (its job would wait for it for the unreachable lease)."""
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    first = queue(project, store, "first")
    mine = queue(project, store, "mine")
    beat(hub, "w-own", only_job=mine.id)
    sched.tick()
    assert store.get(mine.id).worker_id == "w-own"
    assert store.get(first.id).state is JobState.QUEUED
    sched.tick()  # free again? it still takes nothing else
    assert store.get(first.id).state is JobState.QUEUED
    away = FolderHub(tmp_path / "away")
    sched.add_hub("ssh:away", away)
    beat(away, "w-away", kind="ssh", gpu=True, gpu_name="A100")
    sched.tick()
    assert store.get(first.id).worker_id == "w-away"  # reachable: it takes the job
    store.finish(first.id, 1, JobState.SUCCEEDED, "done")
    sched.drop_hub("ssh:away")
    second = queue(project, store, "second")
    beat(hub, "w-cpu")  # a slower worker, but one the daemon can reach
    sched.tick()
    assert store.get(second.id).worker_id == "w-cpu"  # it does not wait for w-away
