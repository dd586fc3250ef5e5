"""`orch submit` warns that a job will wait for a worker nobody starts only when no
such worker is alive: not while the daemon it just started has yet to read the
Drive hub's heartbeats (issue 10). Real Drive workers on the local Drive server,
the real CLI and daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import Project, load_settings
from orchestrator.hubs import claim_hub
from orchestrator.identity import load_identity
from orchestrator.lifecycle import running_pid
from tests.drive_project import DriveProject

from .conftest import drive_hub, drive_project, kill_processes_of, wait_for

WARNING = "no Colab worker is running"


@pytest.fixture
def dproj(project_dir: Path, drive: Any) -> Iterator[DriveProject]:
    p = drive_project(project_dir, drive)
    # the hub set up earlier (as `orch colab` does), so workers beat before any daemon
    claim_hub(drive_hub(p.folder), load_identity(project_dir / ".orch").project_id)
    yield p
    for w in p.workers:
        w.kill()
    kill_processes_of(project_dir.parent)


def beating(p: DriveProject) -> int:
    """How many workers have a heartbeat on the project's Drive folder."""
    prefix = f"{p.folder}/workers/"
    return sum(1 for path in p.fake.paths()
               if path.startswith(prefix) and path.endswith("/heartbeat.json"))


def daemon_running(root: Path) -> bool:
    return running_pid(Project(root, load_settings(root, environ={}))) is not None


def test_no_warning_while_two_colab_workers_beat_as_the_daemon_starts(
        dproj: DriveProject) -> None:
    for name in ("colab-a", "colab-b"):
        dproj.worker(name, "--kind", "colab", heartbeat=1.0, poll=0.3, idle_timeout=120)
    wait_for(lambda: beating(dproj) == 2, timeout=60, message="two heartbeats on Drive")
    assert not daemon_running(dproj.root)
    proc = dproj.orch("submit", "--on", "colab", "save.py", check=True)
    assert "started the orch daemon" in proc.stderr  # this submit started it
    assert WARNING not in proc.stderr, proc.stderr
    # and once the daemon is up, a second submit says nothing either
    again = dproj.orch("submit", "--on", "colab", "--name", "again", "save.py", check=True)
    assert WARNING not in again.stderr and "started the orch daemon" not in again.stderr


def test_the_warning_stays_when_no_colab_worker_runs(dproj: DriveProject) -> None:
    proc = dproj.orch("submit", "--on", "colab", "save.py", check=True)
    assert "started the orch daemon" in proc.stderr
    assert WARNING in proc.stderr, proc.stderr
    assert sum(WARNING in line for line in proc.stderr.splitlines()) == 1
    wait_for(lambda: daemon_running(dproj.root), timeout=30, message="daemon up")
    again = dproj.orch("submit", "--on", "colab", "--name", "again", "save.py", check=True)
    assert WARNING in again.stderr, again.stderr
