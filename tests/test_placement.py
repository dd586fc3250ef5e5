"""Placement: each estimate source, learned speeds, the choice between places (a
Colab worker still to start, a session that ends too soon), packing jobs onto one
GPU, a worker running several jobs at once, the probe that moves a job, and
`orch explain`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import protocol as P
from orchestrator.config import Project
from orchestrator.estimates import Run, estimate, learn_speeds, workload
from orchestrator.hubs.folder import FolderHub
from orchestrator.models import Job, JobState
from orchestrator.placement import Server, plan
from orchestrator.planner import allows, fits_memory
from orchestrator.scheduler import Scheduler
from orchestrator.store import Store
from orchestrator.submit import SubmitRequest, submit

from .conftest import beat, job, orch_env, queue, run_orch, worker

S = JobState


# ---- estimates ----------------------------------------------------------------------

def test_every_estimate_source() -> None:
    runs = [Run("train.py --lr 0.1", "cpu:local", 10, 6.0, 65.0)]
    speeds = learn_speeds(runs)
    explicit = estimate("train.py", ("--epochs", "10"), 1200.0, runs, speeds)
    assert explicit.source.startswith("--estimate") and explicit.seconds_at(4.0) == 300.0
    # history of the same script and arguments, scaled by --epochs
    scaled = estimate("train.py", ("--lr", "0.1", "--epochs", "20"), None, runs, speeds)
    assert scaled.source.startswith("history (1 run(s)") and "scaled to 20 epochs" in scaled.source
    assert scaled.seconds_at(1.0) == pytest.approx(5.0 + 20 * 6.0)  # overhead + epochs
    assert scaled.seconds_at(4.0) == pytest.approx(5.0 + 20 * 6.0 / 4)
    # a job nothing is known about: its first epoch, once it ran it somewhere
    unknown = estimate("other.py", (), None, runs, speeds)
    assert not unknown.known and unknown.seconds_at(1.0) is None
    probe = estimate("other.py", (), None, runs, speeds,
                     {"epochs": 30, "completed_epochs": 1, "epoch_seconds": 2.0}, "gpu:Tesla T4")
    assert probe.source.startswith("probe (1 epoch(s) of 30 at 2.0 s on gpu:Tesla T4)")
    assert probe.seconds_at(speeds["cpu:local"]) == pytest.approx(29 * 2.0 * 4.0)


def test_workload_keys_leave_only_epochs_out() -> None:
    assert workload("t.py", ("--epochs", "5", "--lr", "1")) == ("t.py --lr 1", 5)
    assert workload("t.py", ("--epochs=7",)) == ("t.py", 7)
    assert workload("t.py", ("--lr", "1")) == ("t.py --lr 1", None)


def test_speeds_are_learned_from_the_same_workload_on_two_devices() -> None:
    runs = [Run("a.py", "cpu:local", 5, 10.0, 60.0), Run("a.py", "gpu:Tesla T4", 5, 1.0, 15.0),
            Run("b.py", "cpu:local", 5, 4.0, 30.0), Run("b.py", "gpu:Tesla T4", 5, 0.5, 8.0)]
    speeds = learn_speeds(runs)
    assert speeds["cpu:local"] == 1.0
    assert 7.0 < speeds["gpu:Tesla T4"] < 10.0  # 10x and 8x, pulled a little to the prior 4
    assert learn_speeds([])["cpu:local"] == 1.0


# ---- the choice between places -------------------------------------------------------

CPU = Server("cpu-1", "local", "cpu:local", worker("cpu-1"))
COLAB_SOON = Server("colab-1 (to start)", "colab", "gpu:Tesla T4",
                    worker("colab-1", "colab", "Tesla T4", "remote"), ready_in=180.0,
                    startup=180.0, remote=True, ends_in=180.0 + 12 * 3600, live=False)


def decide(jobs: list[Job], servers: list[Server], policy: str = "finish-first") -> list[Any]:
    estimates = {j.id: estimate(j.script, j.args, j.estimate_s, [], {}) for j in jobs}
    return plan(jobs, servers, estimates, {}, lambda j, s: 10.0, allows, policy)


def test_a_long_job_waits_for_a_colab_worker_still_to_start_a_quick_one_stays() -> None:
    long_run, quick = job("long", 3600.0), job("quick", 60.0)
    d_long, d_quick = decide([long_run, quick], [CPU, COLAB_SOON])
    assert d_long.choice.server == "colab-1 (to start)"  # 3 min start + 15 min beats 60 min
    assert d_long.choice.finish_in == pytest.approx(180 + 10 + 900)
    assert "finishes first" in d_long.reason and "next best cpu-1" in d_long.reason
    assert d_quick.choice.server == "cpu-1"  # one minute here beats minutes to reach Colab
    # `--on local` keeps its constraint
    (pinned,) = decide([job("pinned", 3600.0, target="local")], [CPU, COLAB_SOON])
    assert pinned.choice.server == "cpu-1" and len(pinned.options) == 1


def test_a_session_that_ends_too_soon_is_refused_unless_the_job_checkpoints() -> None:
    short = dataclasses.replace(COLAB_SOON, ready_in=0.0, startup=0.0, live=True,
                                key="colab-2", ends_in=1800.0)
    plain, resumable = job("plain", 4 * 3600.0), job("resumable", 4 * 3600.0, checkpoints=True)
    (d_plain,) = decide([plain], [CPU, short])
    (d_resumable,) = decide([resumable], [CPU, short])
    assert d_plain.choice.server == "cpu-1"
    assert not next(o for o in d_plain.options if o.server == "colab-2").fits
    assert d_resumable.choice.server == "colab-2"  # it resumes in the next session
    (alone,) = decide([plain], [short])
    assert alone.choice is None and "end before it does" in alone.reason


def test_each_job_plans_around_the_ones_before_it() -> None:
    gpu = Server("gpu-1", "local", "gpu:Tesla T4", worker("gpu-1", gpu="Tesla T4"))
    decisions = decide([job(f"j{i}", 1200.0) for i in range(3)], [CPU, gpu])
    # 1200 s on the CPU, 300 s on the GPU: the GPU takes the first three in a row
    # only while it still beats the CPU (the third finishes at 900 s < 1200 s)
    assert [d.choice.server for d in decisions] == ["gpu-1", "gpu-1", "gpu-1"]
    more = decide([job(f"j{i}", 1200.0) for i in range(5)], [CPU, gpu])
    assert [d.choice.server for d in more][3:] == ["cpu-1", "gpu-1"]
    # a job of unknown length starts where it can start first (the probe)
    (probe,) = decide([job("new")], [dataclasses.replace(gpu, ready_in=100.0), CPU])
    assert probe.choice.server == "cpu-1" and "length is not known" in probe.reason


def test_the_baselines_the_simulator_compares() -> None:
    jobs = [job("a", 3600.0), job("b", 60.0)]
    rule = decide(jobs, [CPU, dataclasses.replace(COLAB_SOON, live=True, key="colab-1")], "rule")
    assert [d.choice.server for d in rule] == ["colab-1", "cpu-1"]
    local = decide(jobs, [CPU, COLAB_SOON], "local")
    assert {d.choice.server for d in local} == {"cpu-1"}
    turns = decide([*jobs, job("c", 60.0)], [CPU, COLAB_SOON], "round-robin")
    assert [d.choice.server for d in turns] == ["cpu-1", COLAB_SOON.key, "cpu-1"]
    anyfree = decide(jobs, [CPU, COLAB_SOON], "any-free")
    assert [d.choice.server for d in anyfree] == ["cpu-1", COLAB_SOON.key]  # free first


# ---- packing several jobs onto one GPU ---------------------------------------------

def test_jobs_share_a_gpu_while_their_memory_fits() -> None:
    gpu = worker("gpu-1", gpu="H200", slots=4, gpu_mem_mb=10_000.0)
    running = [dataclasses.replace(job(f"r{i}"), state=S.RUNNING, worker_id="gpu-1",
                                   gpu_mem_mb=3000.0) for i in range(2)]

    def memory(j: Job) -> float | None:
        return j.gpu_mem_mb

    assert fits_memory(dataclasses.replace(job("small"), gpu_mem_mb=2500.0), gpu, running, memory)
    assert not fits_memory(dataclasses.replace(job("big"), gpu_mem_mb=4000.0), gpu, running,
                           memory)  # 10,000 MB with 10% headroom
    assert not fits_memory(job("unknown"), gpu, running, memory)  # measured alone first
    assert fits_memory(job("unknown"), gpu, [], memory)
    one_slot = worker("cpu-1")
    assert not fits_memory(job("x"), one_slot, [dataclasses.replace(running[0],
                                                                    worker_id="cpu-1")], memory)


def test_the_scheduler_packs_a_gpu_by_memory(project: Project, store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    beat(hub, "gpu-1", gpu=True, gpu_name="H200", slots=4, gpu_mem_mb=10_000.0)
    jobs = [queue(project, store, f"j{i}", gpu_mem="3000") for i in range(4)]
    sched.tick()
    assert [store.get(j.id).worker_id for j in jobs] == ["gpu-1"] * 3 + [None]  # 9,000 of 10,000
    assert all(hub.exists(P.inbox("gpu-1", j.id, 1)) for j in jobs[:3])


def test_measured_gpu_memory_lets_later_runs_share_the_gpu(project: Project,
                                                          store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    beat(hub, "gpu-1", gpu=True, gpu_name="H200", slots=4, gpu_mem_mb=10_000.0)
    first = queue(project, store, "small")
    sched.tick()
    second = queue(project, store, "small")
    sched.tick()
    assert store.get(first.id).worker_id == "gpu-1"
    assert store.get(second.id).state is S.QUEUED  # its memory is not known: it waits
    hub.put_doc(P.status(first.id, 1), P.RunStatus(
        job_id=first.id, attempt=1, worker_id="gpu-1", phase=P.Phase.SUCCEEDED,
        started_at=1000.0, ended_at=1019.5, progress={  # the worker's clock
            "epochs": 2, "completed_epochs": 2, "epoch_seconds": 9.0, "gpu_mem_peak_mb": 2500.0}))
    hub.put_doc(P.result_json(first.id, 1), P.Seal(job_id=first.id, attempt=1, sha256="0" * 64,
                                                   size=0, files=(), sealed_at=time.time()))
    sched.tick()
    assert store.get(first.id).state is S.SUCCEEDED
    assert store.runs()[0].gpu_mem_mb == 2500.0  # measured by its run: learned
    assert store.runs()[0].seconds == 19.5  # timed by one clock, the worker's
    more = [queue(project, store, "small") for _ in range(3)]
    sched.tick()
    on_gpu = [j for j in [second, *more] if store.get(j.id).worker_id == "gpu-1"]
    assert on_gpu == [second, more[0], more[1]]  # 3 × 2,500 MB fit in 90% of 10,000
    assert store.get(more[2].id).state is S.QUEUED


def test_a_long_job_waits_for_the_busy_gpu_rather_than_the_free_cpu(project: Project,
                                                                    store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    beat(hub, "gpu-1", gpu=True, gpu_name="Tesla T4")
    first = queue(project, store, "first", estimate="20m")
    sched.tick()
    assert store.get(first.id).worker_id == "gpu-1"
    beat(hub, "cpu-1")
    second = queue(project, store, "second", estimate="2h")
    sched.tick()
    waiting = store.get(second.id)
    assert waiting.state is S.QUEUED  # 5 min left + 30 min on the GPU beats 2 h on the CPU
    decision = json.loads(waiting.placement or "{}")
    assert decision["choice"]["server"] == "gpu-1"
    assert any("placement: gpu-1" in e.message for e in store.events(second.id))
    quick = queue(project, store, "quick", estimate="30s")
    sched.tick()
    assert store.get(quick.id).worker_id == "cpu-1"  # the free CPU still takes quick work
    out = run_orch(project.root, "explain", "second", check=True).stdout
    assert "places considered:" in out and "→ gpu-1 (gpu:Tesla T4)" in out
    assert "cpu-1 (cpu:local): finish in 2h00m" in out
    assert "estimate  --estimate" in out and "finishes first" in out
    table = run_orch(project.root, "status", check=True).stdout
    assert "→ gpu-1" in table and "FINISH" in table
    row = json.loads(run_orch(project.root, "status", "second", "--json", check=True).stdout)
    assert row["planned_on"] == "gpu-1"
    at = json.loads(store.get(second.id).placement or "{}")["at"]
    assert row["expected_finish"] == pytest.approx(at + 5 * 60 + 30 * 60, abs=60)


def test_a_probed_job_moves_to_where_it_finishes_much_sooner(project: Project,
                                                             store: Store) -> None:
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    beat(hub, "cpu-1")
    (project.root / "long.py").write_text("from orchestrator.keras import callbacks\n")
    j = submit(project, SubmitRequest(script=str(project.root / "long.py")), store=store)[0]
    sched.tick()
    assert store.get(j.id).worker_id == "cpu-1"  # unknown length: it starts where it can
    hub.put_doc(P.status(j.id, 1), P.RunStatus(
        job_id=j.id, attempt=1, worker_id="cpu-1", phase=P.Phase.RUNNING,
        started_at=time.time() - 35, progress={"epochs": 40, "completed_epochs": 1,
                                               "epoch_seconds": 30.0,
                  "mean_epoch_seconds": 30.0, "eta_s": 1170.0}))
    beat(hub, "gpu-1", gpu=True, gpu_name="Tesla T4")
    beat(hub, "cpu-1")
    sched.tick()
    moved = store.get(j.id)
    assert moved.attempt == 2 and moved.worker_id == "gpu-1"  # resumes from its checkpoint
    assert any("moved: gpu-1 finishes it" in e.message for e in store.events(j.id))
    learned = store.runs()[0]  # what its first epoch showed, as the whole run it foretells
    assert (learned.epoch_seconds, learned.epochs) == (30.0, 40)
    assert learned.seconds == pytest.approx(35 + 39 * 30, abs=10)


def test_a_worker_runs_several_jobs_at_once(project: Project, store: Store,
                                            tmp_path: Path) -> None:
    # each run says it started, then waits (at most 60 s) for the other to start too:
    # run one after the other, the first would end before the second began
    met = tmp_path / "started"
    met.mkdir()
    script = ("import os, pathlib, time\n"
              f"met = pathlib.Path({str(met)!r})\n"
              "t0 = time.time()\n"
              "(met / os.environ['ORCH_JOB_ID']).touch()\n"
              "while len(list(met.iterdir())) < 2 and time.time() < t0 + 60:\n"
              "    time.sleep(0.05)\n"
              "out = pathlib.Path(os.environ['ORCH_OUTPUT_DIR'], 'span')\n"
              "out.write_text(f'{t0} {time.time()}')\n")
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub, places=[])
    hub.put_doc(P.heartbeat("w-2"), P.Heartbeat(
        worker_id="w-2", name="w", host="h", pid=None, seq=1, state=P.WorkerState.IDLE,
        capabilities=P.Capabilities(kind="local", slots=2)))
    jobs = []
    for i in range(2):
        (project.root / f"s{i}.py").write_text(script)
        jobs.append(submit(project, SubmitRequest(script=str(project.root / f"s{i}.py")),
                           store=store)[0])
    sched.tick()
    assert {store.get(j.id).worker_id for j in jobs} == {"w-2"}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.worker", "--hub", str(project.hub_dir), "--id",
         "w-2", "--name", "w", "--slots", "2", "--work-dir", str(tmp_path / "work"), "--burst"],
        env=orch_env(), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    spans = []
    for j in jobs:
        sched.tick()
        assert store.get(j.id).state is S.SUCCEEDED, store.get(j.id).error
        tar = project.hub_dir / P.result_tar(j.id, 1)
        import tarfile

        with tarfile.open(tar) as t:
            member = t.extractfile("0/span")
            assert member is not None
            spans.append([float(x) for x in member.read().split()])
    (a0, a1), (b0, b1) = spans
    assert a0 < b1 and b0 < a1  # the two runs overlapped
