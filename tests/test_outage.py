"""Workers ride out outages: Drive down for minutes, token refreshes failing, sign-in
lapsed, a worker's own network cut for longer than its lease. Real CLI, daemon and
Drive worker processes on the local Drive v3 server; a tiny training script that
speaks orch's progress-file protocol (``progress.json``, ``ckpt.tar``)."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from orchestrator.errors import SignInExpiredError, TransientHubError
from orchestrator.models import JobState
from orchestrator.procgroup import pid_alive
from orchestrator.store import Store
from tests.drive_project import DriveProject
from tests.netcut import NetCut

from .conftest import drive_hub, drive_project, group_alive, kill_processes_of, read_job, wait_for

S = JobState

EPOCHS_SCRIPT = """\
import io, json, os, pathlib, subprocess, sys, tarfile, time
epochs, pause = int(sys.argv[1]), float(sys.argv[2])
run = pathlib.Path(os.environ["ORCH_RUN_DIR"])
# a helper process in the script's group, as data loaders start: it outlives the script
# unless the worker kills the whole group
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"])

def atomic(path, data):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

for epoch in range(epochs):
    time.sleep(pause)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("epoch")
        info.size = len(str(epoch))
        tar.addfile(info, io.BytesIO(str(epoch).encode()))
    atomic(run / "ckpt.tar", buf.getvalue())
    atomic(run / "progress.json", json.dumps(
        {"epoch": epoch, "completed_epochs": epoch + 1, "epochs": epochs}).encode())
    print("epoch", epoch, flush=True)
out = pathlib.Path(os.environ["ORCH_OUTPUT_DIR"])
(out / "model.bin").write_bytes(b"trained %d epochs" % epochs)
"""


def project(root: Path, fake: Any, lease: float) -> DriveProject:
    p = drive_project(root, fake, lease=lease)
    (root / "epochs.py").write_text(EPOCHS_SCRIPT)
    return p


@pytest.fixture
def cleanup(project_dir: Path) -> Iterator[list[DriveProject]]:
    made: list[DriveProject] = []
    yield made
    for p in made:
        for w in p.workers:
            w.kill()
    kill_processes_of(project_dir.parent)


def epochs_done(root: Path, job_id: str) -> int:
    return int((read_job(root, job_id).progress or {}).get("completed_epochs") or 0)


def trainer_pid(p: DriveProject, job_id: str, attempt: int = 1) -> int:
    key = f"{p.folder}/runs/{job_id}/{attempt}/status.json"
    wait_for(lambda: p.fake.paths().get(key), timeout=60, message="status on Drive")
    return int(wait_for(lambda: json.loads(p.fake.content(p.fake.paths()[key])).get("pid"),
                        timeout=60, message="the trainer's pid"))


def log_of(p: DriveProject, name: str) -> str:
    return (p.root.parent / f"{name}.log").read_text(errors="replace")


def ran_once(p: DriveProject, job_id: str) -> list[str]:
    with Store(p.db) as store:
        events = [e.dst for e in store.events(job_id)]
    assert events.count("SUCCEEDED") == 1 and events.count("PULLED") == 1, events
    assert "FAILED" not in events, events
    assert (p.root / "models" / "epochs" / "model.bin").read_bytes().startswith(b"trained")
    return events


def checkpoint_epoch(p: DriveProject, job_id: str, attempt: int) -> int:
    data = p.fake.content(p.fake.paths()[f"{p.folder}/runs/{job_id}/ckpt/{attempt}.tar"])
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("epoch")
        assert member is not None
        return int(member.read())


# ---- the worker's view of its hub ------------------------------------------------------


def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    from orchestrator.outage import Outage

    now = [1000.0]
    outage = Outage("drive:x", cap=30.0, clock=lambda: now[0])
    assert not outage.down and outage.delay() == 0 and not outage.lease_lapsed(10)
    with caplog.at_level("INFO", logger="orchestrator.outage"):
        delays = []
        for _ in range(8):
            delays.append(outage.failed(TransientHubError("Drive files.list failed: 503")))
            now[0] += delays[-1]
        assert delays == [1, 2, 4, 8, 16, 30, 30, 30]  # capped
        assert outage.down and outage.lease_lapsed(120) and not outage.lease_lapsed(130)
        outage.failed(SignInExpiredError("Drive sign-in lapsed: run `orch auth` again"))
        outage.failed(SignInExpiredError("Drive sign-in lapsed: run `orch auth` again"))
        outage.ok(beat=True)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "unreachable since" in lines[0] and "retrying every 30 s at most" in lines[0]
    assert "sign-in lapsed: run `orch auth` again" in lines[1]
    assert lines[2] == "hub drive:x back after 2m01s"
    assert not outage.down and outage.delay() == 0 and not outage.lease_lapsed(0)


# ---- the Drive client: token refresh failures -----------------------------------------


def test_token_refresh_failures_are_transient_unless_the_grant_lapsed(drive: Any) -> None:
    hub = drive_hub("orch-hub/refresh", retries=1)
    drive.expire_tokens()  # the next request refreshes the access token
    for kind in ("503", "drop"):
        drive.faults.token_outage(60, kind)
        with pytest.raises(TransientHubError):
            hub.exists("nothing/here")
    drive.faults.token_outage(60, "invalid_grant")
    with pytest.raises(SignInExpiredError, match=r"run `orch auth` again"):
        hub.exists("nothing/else")
    drive.faults.token_outage(0)
    assert hub.exists("nothing/more") is False  # refreshed: works again
    # the API down, through the control endpoint a separately started server offers
    post = urllib.request.Request(drive.url + "_fake/faults", method="POST",
                                  data=json.dumps({"outage": {"seconds": 60, "kind": "503"}})
                                  .encode())
    with urllib.request.urlopen(post) as answer:
        assert 55 < json.loads(answer.read())["outage_left"] <= 60
    with pytest.raises(TransientHubError):
        hub.put_bytes("still/something", b"x")  # a write always reaches Drive
    assert drive.faults.injected_counts()["503"] >= 2  # every try failed
    drive.faults.outage(0)
    hub.put_bytes("still/something", b"x")
    assert hub.exists("still/something")


def test_a_dropped_refresh_under_google_auth_credentials_is_transient(
        drive: Any, tmp_path: Path) -> None:
    """Colab's credentials are google-auth ones (the notebook's sign-in cell): a
    connection to the token endpoint dropped while refreshing is an outage there too,
    not a failed job. (Transports that wrap it as google-auth's TransportError are
    classified the same way in DriveClient.transient.)"""
    from orchestrator.hubs.drive import DriveHub
    from orchestrator.places.colab_cells import sign_in
    from orchestrator.places.colab_launch import drive_sign_in

    saved = tmp_path / "grant.json"
    drive.write_credentials(saved)
    creds = sign_in(drive_sign_in(saved))  # the notebook's own sign-in cell
    hub = DriveHub("orch-hub/google-auth", credentials=creds, api_url=drive.url, retries=1,
                   backoff=0.01, max_backoff=0.2, staleness=0.2)
    hub.put_bytes("first", b"1")
    drive.expire_tokens()
    drive.faults.token_outage(60, "drop")
    with pytest.raises(TransientHubError):
        hub.put_bytes("second", b"2")  # a write always reaches Drive
    drive.faults.token_outage(0)
    hub.put_bytes("second", b"2")
    assert hub.get_bytes("second") == b"2"


# ---- workers ------------------------------------------------------------------------


def test_a_two_minute_drive_outage_mid_training_does_not_fail_the_job(
        project_dir: Path, drive: Any, cleanup: list[DriveProject]) -> None:
    """The issue's case: Drive fails every request for 2 minutes while a job trains."""
    p = project(project_dir, drive, lease=300)
    cleanup.append(p)
    p.worker("remote-1", "--retry-max", "10", heartbeat=1.0, poll=0.3, idle_timeout=600)
    job_id = p.submit("--name", "epochs", "epochs.py", "36", "4")
    wait_for(lambda: epochs_done(p.root, job_id) >= 2, timeout=120, interval=0.5,
             message="two epochs reported")
    pid = trainer_pid(p, job_id)
    drive.faults.outage(120, "503")
    wait_for(lambda: drive.faults.outage_left() == 0, timeout=130, interval=1,
             message="the outage over")
    assert pid_alive(pid)  # it trained on all along
    before = epochs_done(p.root, job_id)
    wait_for(lambda: epochs_done(p.root, job_id) > before, timeout=90, interval=0.5,
             message="progress after the outage")
    wait_for(lambda: read_job(p.root, job_id).state is S.PULLED, timeout=180, interval=1,
             message="the job pulled")
    ran_once(p, job_id)
    with Store(p.db) as store:
        assert len(store.attempts(job_id)) == 1
    assert checkpoint_epoch(p, job_id, 1) == 35  # the newest checkpoint went out
    wait_for(lambda: not group_alive(pid), timeout=10, message="the trainer's group gone")
    log = log_of(p, "remote-1")
    assert log.count("unreachable since") == 1, log[-3000:]
    assert "back after" in log and "Traceback" not in log
    assert p.workers[0].poll() is None  # and the worker carries on


def test_token_refresh_failures_and_a_lapsed_sign_in_do_not_fail_the_job(
        project_dir: Path, drive: Any, cleanup: list[DriveProject]) -> None:
    p = project(project_dir, drive, lease=60)
    cleanup.append(p)
    p.worker("remote-1", "--retry-max", "2", heartbeat=1.0, poll=0.3, idle_timeout=600)
    job_id = p.submit("--name", "epochs", "epochs.py", "14", "1.5")
    wait_for(lambda: epochs_done(p.root, job_id) >= 1, timeout=120, interval=0.5,
             message="an epoch reported")
    pid = trainer_pid(p, job_id)
    for kind in ("invalid_grant", "503"):
        drive.expire_tokens()  # every client has to refresh, and cannot for 6 s
        drive.faults.token_outage(6, kind)
        wait_for(lambda k=kind: drive.faults.injected_counts().get(f"token:{k}"), timeout=30,
                 message=f"a refresh refused ({kind})")
        wait_for(lambda: drive.faults.token_fault() is None, timeout=10, message="refresh ok")
    wait_for(lambda: read_job(p.root, job_id).state is S.PULLED, timeout=120, interval=0.5,
             message="the job pulled")
    ran_once(p, job_id)
    with Store(p.db) as store:
        assert len(store.attempts(job_id)) == 1
    wait_for(lambda: not group_alive(pid), timeout=10, message="the trainer's group gone")
    log = log_of(p, "remote-1")
    assert log.count("sign-in lapsed: run `orch auth` again") == 1, log[-3000:]
    assert "back after" in log and "Traceback" not in log


def test_an_idle_worker_survives_the_hub_going_away_and_takes_work_after(
        project_dir: Path, drive: Any, cleanup: list[DriveProject]) -> None:
    p = project(project_dir, drive, lease=60)
    cleanup.append(p)
    p.orch("daemon", "start", check=True)  # it sets up the hub
    worker = p.worker("remote-1", "--retry-max", "1", heartbeat=1.0, poll=0.3,
                      idle_timeout=600)
    wait_for(lambda: any(k.startswith(f"{p.folder}/workers/") for k in drive.paths()),
             timeout=60, message="a heartbeat")
    drive.faults.outage(8, "drop")
    wait_for(lambda: drive.faults.outage_left() == 0, timeout=20, message="the outage over")
    drive.faults.outage(6, "500")
    wait_for(lambda: drive.faults.outage_left() == 0, timeout=20, message="the outage over")
    assert worker.poll() is None
    job_id = p.submit("--name", "epochs", "epochs.py", "2", "0.2")
    wait_for(lambda: read_job(p.root, job_id).state is S.PULLED, timeout=120, interval=0.5,
             message="the job pulled")
    assert read_job(p.root, job_id).worker_id.startswith("remote-1-")
    log = log_of(p, "remote-1")
    assert 1 <= log.count("unreachable since") <= 2, log[-3000:]
    assert "back after" in log and "Traceback" not in log


def test_an_outage_longer_than_the_lease_requeues_and_the_run_is_killed(
        project_dir: Path, drive: Any, cleanup: list[DriveProject]) -> None:
    """The worker's own network is cut for longer than its lease: the daemon re-queues
    the job, the worker kills its run on its own (no orphan) and writes nothing for it;
    the job is run to completion exactly once (here by the same worker, when back)."""
    p = project(project_dir, drive, lease=10)
    cleanup.append(p)
    up = urlsplit(drive.url)
    net = NetCut(up.hostname or "127.0.0.1", up.port or 80)
    try:
        p.worker("remote-1", "--retry-max", "2", heartbeat=1.0, poll=0.3, idle_timeout=600,
                 api_url=net.url)
        job_id = p.submit("--name", "epochs", "epochs.py", "12", "1")
        wait_for(lambda: epochs_done(p.root, job_id) >= 1, timeout=120, interval=0.3,
                 message="an epoch reported")
        pid = trainer_pid(p, job_id)
        net.cut(40)
        wait_for(lambda: read_job(p.root, job_id).attempt == 2, timeout=30, interval=0.3,
                 message="the lease expired, the job re-queued")
        wait_for(lambda: not group_alive(pid), timeout=25, interval=0.3,
                 message="the worker killed its run (its whole process group)")
        assert net.is_cut()  # on its own, before it could hear from the hub
        wait_for(lambda: read_job(p.root, job_id).state is S.PULLED, timeout=150,
                 interval=0.5, message="the job pulled")
    finally:
        net.close()
    events = ran_once(p, job_id)
    assert events.count("LOST") == 1, events
    assert read_job(p.root, job_id).attempt == 2
    paths = drive.paths()
    assert f"{p.folder}/runs/{job_id}/2/result.json" in paths
    assert f"{p.folder}/runs/{job_id}/1/result.json" not in paths
    log = log_of(p, "remote-1")
    assert "longer than the lease" in log and "Traceback" not in log, log[-3000:]
