"""The whole system over the Drive hub: the real CLI and daemon (following the
changes feed), real worker processes on ``--hub drive:…``, the real Google client,
and the local Drive v3 server, with faults and lag."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.models import JobState
from orchestrator.procgroup import pid_alive
from orchestrator.store import Store
from tests.drive_project import DriveProject

from .conftest import drive_project, kill_processes_of, read_job, wait_for

S = JobState


@pytest.fixture
def dproj(project_dir: Path, drive: Any) -> Iterator[DriveProject]:
    p = drive_project(project_dir, drive)
    yield p
    for w in p.workers:
        w.kill()
    kill_processes_of(project_dir.parent)


def pulled(root: Path, job_id: str) -> bool:
    return read_job(root, job_id).state is S.PULLED


def test_job_runs_on_a_drive_worker_and_comes_back(dproj: DriveProject) -> None:
    dproj.worker("remote-1", heartbeat=1.0, poll=0.3, idle_timeout=120)
    proc = dproj.orch("submit", "--on", "remote", "--wait", "save.py", check=True)
    job = read_job(dproj.root, proc.stdout.split()[0])
    assert job.state is S.PULLED and job.hub == "remote"
    assert job.worker_id and job.worker_id.startswith("remote-1-")
    model = dproj.root / "models" / "save" / "model.bin"
    assert model.read_bytes() == job.id.encode() * 1000
    detail = dproj.orch("status", job.id, check=True).stdout
    assert f"trained {job.id} attempt 1" in detail  # the log, read from Drive
    logs = dproj.orch("logs", job.id, check=True).stdout
    assert f"trained {job.id}" in logs
    # credentials never reach a log
    refresh = dproj.fake.credentials().refresh_token
    for log in (dproj.root / ".orch" / "logs").iterdir():
        assert refresh not in log.read_text(errors="replace")


def test_a_second_job_sharing_data_moves_only_small_files(dproj: DriveProject) -> None:
    (dproj.root / "data.bin").write_bytes(os.urandom(400_000))
    dproj.worker("remote-1", heartbeat=1.0, poll=0.3, idle_timeout=120)
    first = dproj.submit("--wait", "--data", "data.bin", "save.py")
    dproj.fake.reset_stats()
    second = dproj.submit("--wait", "--data", "data.bin", "--name", "again", "save.py")
    assert pulled(dproj.root, first) and pulled(dproj.root, second)
    # the snapshot and the data are on Drive already: nothing big goes up...
    assert dproj.fake.stats["bytes_received"] < 100_000
    # ...and the worker takes the data from its blob cache: nothing big comes down
    assert dproj.fake.stats["bytes_sent"] < 100_000


def test_every_job_lands_exactly_once_with_ten_percent_of_requests_failing(
        dproj: DriveProject) -> None:
    dproj.fake.faults.configure(rate=0.1, seed=11, kinds=[
        "rateLimitExceeded", "userRateLimitExceeded", "429", "500", "503", "drop"])
    dproj.worker("remote-1", heartbeat=1.0, poll=0.3, idle_timeout=120)
    dproj.worker("remote-2", heartbeat=1.0, poll=0.3, idle_timeout=120)
    ids = [dproj.submit("--name", f"j{i}", "save.py", "0.5") for i in range(4)]
    for job_id in ids:
        wait_for(lambda j=job_id: pulled(dproj.root, j), timeout=240, interval=0.5,
                 message=f"{job_id} pulled despite faults")
    injected = dproj.fake.stats["faults_injected"]
    dproj.fake.faults.clear()
    assert sum(injected.values()) >= 10, injected
    with Store(dproj.root / ".orch" / "state.db") as store:
        for job_id in ids:
            events = [e.dst for e in store.events(job_id)]
            assert events.count("PULLED") == 1 and events.count("SUCCEEDED") == 1, events
            assert len(store.attempts(job_id)) == 1
            job = store.get(job_id)
            model = dproj.root / "models" / job.name / "model.bin"
            assert model.read_bytes() == job_id.encode() * 1000
    # nothing duplicated on Drive: one file of each name per run
    paths = dproj.fake.paths()
    for job_id in ids:
        run_folder = paths[f"{dproj.folder}/runs/{job_id}/1"]
        for name in ("result.json", "result.tar", "status.json"):
            assert len(dproj.fake.find(name=name, parent=run_folder, trashed=False)) == 1


def test_lease_expires_while_drive_lags_and_the_zombie_writes_nothing(
        project_dir: Path, drive: Any) -> None:
    p = drive_project(project_dir, drive, lease=6.0)
    try:
        drive.faults.lag = 1.5  # listings and the changes feed see writes 1.5 s late
        first = p.worker("remote-a", heartbeat=1.0, poll=0.3, idle_timeout=120)
        job_id = p.submit("save.py", "25")
        wait_for(lambda: read_job(project_dir, job_id).state is S.RUNNING, timeout=60,
                 message="running on remote-a")
        status_key = f"{p.folder}/runs/{job_id}/1/status.json"
        wait_for(lambda: status_key in drive.paths(), timeout=30, message="status on Drive")
        # the first status (phase STARTING) has no pid yet: wait for the one that does
        trainer = wait_for(
            lambda: json.loads(drive.content(drive.paths()[status_key])).get("pid"),
            timeout=30, message="the training process's pid on Drive")
        os.kill(first.pid, signal.SIGSTOP)  # silent: no heartbeats, run frozen
        os.killpg(trainer, signal.SIGSTOP)
        try:
            wait_for(lambda: read_job(project_dir, job_id).attempt == 2, timeout=60,
                     message="lease expired, re-queued")
            p.worker("remote-b", heartbeat=1.0, poll=0.3, idle_timeout=120)
            wait_for(lambda: read_job(project_dir, job_id).state is S.RUNNING, timeout=60,
                     message="attempt 2 running")
            frozen = drive.content(drive.paths()[status_key])
        finally:
            os.killpg(trainer, signal.SIGCONT)
            os.kill(first.pid, signal.SIGCONT)
        wait_for(lambda: pulled(project_dir, job_id), timeout=120, message="pulled")
        wait_for(lambda: not pid_alive(trainer), timeout=30, message="zombie's run killed")
        assert drive.content(drive.paths()[status_key]) == frozen  # nothing more for #1
        assert f"{p.folder}/runs/{job_id}/1/result.json" not in drive.paths()
        with Store(project_dir / ".orch" / "state.db") as store:
            assert [a.outcome for a in store.attempts(job_id)] == ["LOST", "SUCCEEDED"]
        model = project_dir / "models" / "save" / "model.bin"
        assert model.read_bytes() == job_id.encode() * 1000
    finally:
        drive.faults.clear()
        for w in p.workers:
            w.kill()
