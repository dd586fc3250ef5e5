"""Colab sessions as they really are: a worker reports when its session (its
runtime) began; the daemon learns how long sessions last from the workers whose
heartbeats stopped, and plans with that; a job lost to session ends too often fails.

Real workers (subprocesses on a folder hub), the real scheduler and store, the real
daemon through the CLI; timings scaled down (leases of seconds, sessions of minutes).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator import protocol as P
from orchestrator.config import Project
from orchestrator.hubs.folder import FolderHub
from orchestrator.models import Job, JobState
from orchestrator.scheduler import Scheduler
from orchestrator.sessions import CAP, IDLE_NOTE, learned
from orchestrator.store import Store
from orchestrator.submit import SubmitRequest, submit

from .conftest import FAST_SETTINGS, drive_project, orch_env, read_job, run_orch, wait_for

S = JobState


# ---- the worker reports its session's real start ---------------------------------------


def final_beat(project: Project, *args: str, env: dict[str, str] | None = None
               ) -> tuple[P.Heartbeat, subprocess.CompletedProcess[str]]:
    """Run a --burst worker (empty inbox: it beats, then stops) with ``args``; its
    last heartbeat, as the daemon would read it."""
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.worker", "--hub", str(project.hub_dir),
         "--name", "w", "--work-dir", str(project.work_dir), "--burst", "--kind", "colab",
         *args], env=orch_env(env), capture_output=True, text=True, timeout=120)
    beats = sorted((project.hub_dir / "workers").glob("*/heartbeat.json"),
                   key=lambda p: p.stat().st_mtime)
    assert proc.returncode == 0 and beats, proc.stderr
    beat = P.Heartbeat.from_json(beats[-1].read_bytes())
    for path in beats:  # the next run's beat is the only one
        path.unlink()
    return beat, proc


def test_a_worker_reports_its_runtimes_start_and_session_left_follows_it(
        project: Project) -> None:
    runtime = time.time() - 3600  # the runtime began an hour before the worker
    beat, _ = final_beat(project, "--session-hours", "2", "--session-start", "runtime",
                         "--account", "ann@example.com",
                         env={"ORCH_RUNTIME_STARTED": str(runtime)})
    caps = beat.capabilities
    assert caps.session_started == pytest.approx(runtime)
    assert beat.started > caps.session_started + 3500  # the process began an hour later
    assert caps.session_left is not None
    # two hours from the runtime's start, not the worker's: about one hour left
    assert 3600 - 120 < caps.session_left - (time.time() - beat.time) <= 3600
    assert caps.account == "ann@example.com"

    # without a stand-in's start: the runtime's first process (PID 1), when it is
    # younger than the session's cap; older (a workstation), the worker's process
    up = float(subprocess.run(["ps", "-o", "etimes=", "-p", "1"], capture_output=True,
                              text=True, check=True).stdout)
    pid1_started = time.time() - up  # now, not after the worker ran (whole seconds)
    beat, _ = final_beat(project, "--session-hours", "100000", "--session-start", "runtime")
    assert beat.capabilities.session_started == pytest.approx(pid1_started, abs=5)
    beat, _ = final_beat(project, "--session-hours", "0.0001", "--session-start", "runtime")
    started = beat.capabilities.session_started
    assert started is not None and beat.started - 30 < started <= beat.started

    # old behaviour by default: the session is the worker's process
    beat, _ = final_beat(project, "--session-hours", "1")
    started = beat.capabilities.session_started
    assert started is not None and beat.started - 30 < started <= beat.started
    left = beat.capabilities.session_left
    assert left is not None and 3600 - 60 < left <= 3600


def test_a_bad_session_start_is_one_line(project: Project) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.worker", "--hub", str(project.hub_dir),
         "--burst", "--session-start", "soon"], env=orch_env(), capture_output=True,
        text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "orch worker: error: bad --session-start 'soon': use process, runtime or epoch seconds"]


def test_heartbeats_without_the_new_fields_still_read() -> None:
    """A heartbeat of an older worker (no session_started, no account) decodes; one of
    a newer worker decodes in an orch that does not know the fields (they are extra
    keys, which the codec ignores)."""
    beat = json.loads(P.Heartbeat(
        worker_id="w", name="w", host="h", pid=1, seq=1, state=P.WorkerState.IDLE,
        capabilities=P.Capabilities(kind="colab", session_left=60.0, session_started=5.0,
                                    account="a")).to_json())
    old = json.loads(json.dumps(beat))
    del old["capabilities"]["session_started"], old["capabilities"]["account"]
    read = P.Heartbeat.from_dict(old)
    assert read.capabilities.session_started is None and read.capabilities.account is None
    beat["capabilities"]["from_a_newer_orch"] = 1
    assert P.Heartbeat.from_dict(beat).capabilities.session_started == 5.0


# ---- learning how long sessions last ----------------------------------------------------


def test_the_figure_is_a_low_one_of_the_sessions_that_lasted_past_an_age() -> None:
    nothing = learned([])
    figure = nothing.left("ann", 600)
    assert figure.seconds == CAP - 600 and IDLE_NOTE in figure.how
    ends = learned([("ann", 5400.0), ("ann", 3000.0), ("bob", 40000.0), ("ann", 7200.0),
                    ("ann", 6000.0), ("ann", 9000.0)])
    assert ends.left("ann", 0).seconds == 3000  # the 20th percentile of ann's five
    # a session 50 min old: of those that lasted longer, the low one, less its age
    assert ends.left("ann", 3000).seconds == 5400 - 3000
    assert ends.left("ann", 10000).seconds == 0  # older than any: it may end any moment
    assert "ann's last 5" in ends.left("ann", 0).how
    # an account with no session seen: the project's (all accounts')
    assert ends.left("carol", 0).seconds == 5400  # the 20th percentile of all six
    assert "this project's last 6" in ends.left(None, 0).how


def colab_beat(hub: FolderHub, wid: str, seq: int, age: float, account: str,
               now: float) -> None:
    """Worker ``wid``'s heartbeat: a Colab session ``age`` seconds old with a 12 h cap."""
    hub.put_doc(P.heartbeat(wid), P.Heartbeat(
        worker_id=wid, name=wid, host="colab", pid=None, seq=seq, state=P.WorkerState.IDLE,
        started=now - age + 120, time=now,
        capabilities=P.Capabilities(kind="colab", gpu=True, gpu_name="Tesla T4",
                                    session_left=CAP - age, session_started=now - age,
                                    account=account)))


def colab_project(project: Project) -> Project:
    """``project`` as if its remote hub were Drive (the Colab place takes jobs), with
    its folder hub standing in for it."""
    return Project(project.root, dataclasses.replace(project.settings, hub="drive"))


def test_learned_session_lengths_change_ends_in_and_the_plan(project: Project,
                                                             store: Store) -> None:
    project = colab_project(project)
    hub = FolderHub(project.hub_dir)
    sched = Scheduler(project, store, hub)
    now = time.time()
    colab_beat(hub, "colab-old", 1, age=1500, account="ann", now=now)  # 25 min old
    colab_beat(hub, "colab-new", 1, age=60, account="ann", now=now)
    sched.tick(now)
    servers = {s.key: s for s in sched.planner.servers(store.workers(), [], now)}
    assert servers["colab-new"].ends_in == pytest.approx(CAP - 60)  # nothing learned yet

    # colab-old's heartbeats stop (its session ended at 30 min); colab-new beats on
    later = now + 300
    colab_beat(hub, "colab-new", 2, age=360, account="ann", now=later)
    sched.tick(later)
    colab_beat(hub, "colab-new", 3, age=400, account="ann", now=later + 40)
    sched.tick(later + 200)  # colab-old went silent: its lease expired at `later`
    assert store.session_ends() == [("ann", pytest.approx(1500))]
    new = next(w for w in store.workers() if w.id == "colab-new")
    servers = {s.key: s for s in sched.planner.servers(store.workers(), [], later + 200)}
    # ann's sessions last 25 min: colab-new, 560 s old now, has about 940 s left
    assert servers["colab-new"].ends_in == pytest.approx(1500 - new.session_age_at(later + 200))
    assert "learned from ann's last 1 session" in servers["colab-new"].session

    (project.root / "plain.py").write_text("print('no checkpoints')\n")
    (project.root / "resumable.py").write_text("from orchestrator.keras import callbacks\n")
    # 2 h on this CPU, under an hour on a T4: within the cap, not within ann's sessions
    plain = submit(project, SubmitRequest(script=str(project.root / "plain.py"), on="colab",
                                          estimate="2h"), store=store)[0]
    resumable = submit(project, SubmitRequest(script=str(project.root / "resumable.py"),
                                              on="colab", estimate="2h"), store=store)[0]
    colab_beat(hub, "colab-new", 4, age=600, account="ann", now=later + 240)
    sched.tick(later + 240)
    assert store.get(plain.id).state is S.QUEUED  # kept off the session likely to end
    assert store.get(resumable.id).state is S.ASSIGNED  # it resumes in the next one
    explained = run_orch(project.root, "explain", plain.id, check=True).stdout
    assert "colab-new" in explained and "its session ends first" in explained
    assert "learned from ann's last 1 session(s): they last 25m00s or more" in explained
    assert "every place that could take it would end before it does" in explained


# ---- the loss cap, through the real daemon -----------------------------------------------


def start_worker(root: Path, name: str) -> subprocess.Popen[bytes]:
    """A Colab-like worker (a 1 h session cap) on the project's folder hub."""
    log = open(root.parent / f"{name}.log", "wb")  # noqa: SIM115 - kept by the process
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.worker", "--hub", str(root / ".orch" / "hub"),
         "--name", name, "--kind", "colab", "--session-hours", "1", "--heartbeat", "0.2",
         "--work-dir", str(root.parent / f"work-{name}"), "--idle-timeout", "60"],
        env=orch_env(), stdout=log, stderr=subprocess.STDOUT, cwd=root.parent)


def runtime_ends(hub_dir: Path, job_id: str, attempt: int,
                 worker: subprocess.Popen[bytes]) -> None:
    """The runtime goes at once: the worker and its training process, with no
    "stopped" heartbeat."""
    status = hub_dir / "runs" / job_id / str(attempt) / "status.json"
    trainer = wait_for(lambda: status.exists() and json.loads(status.read_text()).get("pid"),
                       timeout=30, message="the training process's pid")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    with contextlib.suppress(ProcessLookupError):  # it may have died with the worker
        os.killpg(trainer, signal.SIGKILL)


def test_a_job_lost_to_session_ends_fails_at_the_limit(project_dir: Path) -> None:
    (project_dir / "orch.toml").write_text(
        FAST_SETTINGS + 'local_slots = 0\ngpus = "none"\nsession_loss_limit = 2\n')
    (project_dir / "slow.py").write_text("import time\ntime.sleep(60)\n")
    job_id = run_orch(project_dir, "submit", "slow.py", check=True).stdout.split()[0]
    try:
        for attempt in (1, 2):
            worker = start_worker(project_dir, f"colab-{attempt}")
            wait_for(lambda n=attempt: (j := read_job(project_dir, job_id)).state is S.RUNNING
                     and j.attempt == n, timeout=90, message=f"attempt {attempt} running")
            runtime_ends(project_dir / ".orch" / "hub", job_id, attempt, worker)
            if attempt == 1:
                wait_for(lambda: (j := read_job(project_dir, job_id)).state is S.QUEUED
                         and j.attempt == 2, timeout=60, message="re-queued as attempt 2")
        job = wait_for(lambda: (j := read_job(project_dir, job_id)).state is S.FAILED and j,
                       timeout=60, message="failed at the loss limit")
        assert job.error.startswith("lost to 2 Colab session ends; it does not checkpoint "
                                    "or needs longer sessions: the last on colab-2-")
        shown = run_orch(project_dir, "status", job_id, check=True).stdout
        assert "lost to 2 Colab session ends" in shown
        with Store(project_dir / ".orch" / "state.db") as store:
            assert len(store.session_ends()) == 2  # both sessions' lengths were learned
            assert [a.outcome for a in store.attempts(job_id)] == ["LOST", "LOST"]
    finally:
        run_orch(project_dir, "daemon", "stop", timeout=60)


def test_a_drive_workers_session_end_is_learned_for_its_account(project_dir: Path,
                                                                drive: Any) -> None:
    """A Colab-like worker on the local Drive server names the signed-in account; when
    it is killed mid-job its session's length is kept under that account and the job
    is re-queued as lost to a session end."""
    p = drive_project(project_dir, drive, lease=5.0)
    try:
        worker = p.worker("colab-a", "--kind", "colab", "--session-hours", "1",
                          heartbeat=0.5, poll=0.3, idle_timeout=120)
        job_id = p.submit("save.py", "60")
        wait_for(lambda: read_job(project_dir, job_id).state is S.RUNNING, timeout=90,
                 message="running on colab-a")
        status = f"{p.folder}/runs/{job_id}/1/status.json"
        wait_for(lambda: status in drive.paths(), timeout=30, message="status on Drive")
        # the first status (phase STARTING) has no pid yet: wait for the one that does
        trainer = wait_for(lambda: json.loads(drive.content(drive.paths()[status])).get("pid"),
                           timeout=30, message="the training process's pid on Drive")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        with contextlib.suppress(ProcessLookupError):  # it may have died with the worker
            os.killpg(trainer, signal.SIGKILL)
        wait_for(lambda: read_job(project_dir, job_id).attempt == 2, timeout=60,
                 message="lost and re-queued")
        with Store(p.db) as store:
            ends = store.session_ends()
            assert [a for a, _ in ends] == [drive.user_email]
            assert 0 < ends[0][1] < 120  # as old as the worker's runtime at its last beat
            events = [e.message for e in store.events(job_id)]
        assert any("its session ended" in m for m in events), events
        assert read_job(project_dir, job_id).state is S.QUEUED  # 1 of 3: it goes again
    finally:
        p.close()


def test_only_session_ends_count_and_a_retry_starts_the_count_again(
        project: Project, store: Store) -> None:
    from .conftest import queue

    job = queue(project, store, "plain")

    def on_worker_then_lost(session_end: bool, limit: int = 2) -> Job:
        current = store.get(job.id)
        store.assign(job.id, current.attempt, "colab-x", "local")
        return store.lose(job.id, current.attempt, "no heartbeat", session_end, limit)

    assert on_worker_then_lost(False).state is S.QUEUED  # a stopped worker, a moved probe
    assert on_worker_then_lost(False).state is S.QUEUED
    assert on_worker_then_lost(True).state is S.QUEUED  # 1 of 2
    assert on_worker_then_lost(True, limit=0).state is S.QUEUED  # 0: no limit (2 so far)
    failed = on_worker_then_lost(True)  # the third session end: over the limit of 2
    assert failed.state is S.FAILED and failed.error is not None
    assert failed.error.startswith("lost to 3 Colab session ends; it does not checkpoint")
    store.retry(job.id)
    assert on_worker_then_lost(True).state is S.QUEUED  # counted from 0 again
