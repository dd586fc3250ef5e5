"""SSH hosts end to end: the real CLI and daemon, a real sshd on 127.0.0.1 (the
"host"), workers started over SSH from orch's wheel, the host's hub read over SFTP.
Faults: sshd killed mid-run and restarted, the host's worker killed (a reboot)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest

from orchestrator import protocol as P
from orchestrator.hosts import Host
from orchestrator.models import JobState
from orchestrator.procgroup import pid_alive
from orchestrator.store import Store

from .conftest import TINY_KERAS_SCRIPT, read_job, wait_for, write

S = JobState
Orch = Callable[..., CompletedProcess[str]]
pytestmark = pytest.mark.timeout(400)

HOST_SETTINGS = "remote_lease_ttl = 6\nhost_retry = 1\n"


def settings(root: Path, extra: str = "") -> None:
    with open(root / "orch.toml", "a") as f:
        f.write(HOST_SETTINGS + extra)


def host_hub(host: Host) -> Path:
    """The host's hub folder (the "host" is this machine: readable directly)."""
    return Path(host.workdir) / "hub"


def submit(orch: Orch, *args: str) -> str:
    out = orch("submit", *args, check=True).stdout.split()
    return out[0]


def workers(root: Path) -> list[Any]:
    with Store(root / ".orch" / "state.db") as store:
        return store.workers(include_gone=True)


def test_a_keras_job_trains_on_the_host_and_its_model_is_pulled(
        project_dir: Path, ssh_host: Host, orch: Orch) -> None:
    """`--on ssh:box`: a worker is installed and started on the host over SSH, the job
    runs there (its files are in the host's hub, not the local one) and the model lands
    in the project; `orch daemon status` lists the SSH worker."""
    settings(project_dir)
    write(project_dir, "train.py", TINY_KERAS_SCRIPT)
    job_id = orch("submit", "train.py", "--name", "tiny", "--on", "ssh:box", "--wait", "--",
                  "--epochs", "2", check=True).stdout.split()[0]
    job = read_job(project_dir, job_id)
    assert job.state is S.PULLED and job.hub == "ssh:box"
    assert (project_dir / "models" / "tiny" / "model.keras").is_file()
    assert (host_hub(ssh_host) / P.result_json(job_id, 1)).is_file()
    assert not (project_dir / ".orch" / "hub" / P.status(job_id, 1)).exists()
    ran = [w for w in workers(project_dir) if w.id == job.worker_id]
    assert ran and ran[0].kind == "ssh" and ran[0].name == "box" and ran[0].hub == "ssh:box"
    assert ran[0].id.startswith("box-cpu-")
    listed = orch("daemon", "status", check=True).stdout
    assert f"worker {job.worker_id}: ssh" in listed
    # orch itself was installed from the wheel into the host's folder, with the key 0600
    assert list(Path(ssh_host.workdir).glob("orch-*/orchestrator/worker.py"))
    home = Path(ssh_host.workdir)
    assert os.stat(home / "secret" / "key").st_mode & 0o777 == 0o600
    for private in ("secret", "hub", "work", "logs"):
        assert os.stat(home / private).st_mode & 0o777 == 0o700, private
    assert not list(home.rglob(".key.*"))  # written under a temporary name, then renamed


def test_auto_placement_sends_work_to_the_host_when_no_local_slot(
        project_dir: Path, ssh_host: Host, orch: Orch) -> None:
    """With no local slot, `--on auto` jobs go to the SSH host by placement, and
    `orch explain` names it."""
    settings(project_dir, "local_slots = 0\ngpus = \"none\"\n")
    write(project_dir, "quick.py", "import os, pathlib\npathlib.Path(os.environ["
                                   "'ORCH_OUTPUT_DIR'], 'w.bin').write_bytes(b'w' * 100)\n")
    job_id = orch("submit", "quick.py", "--name", "quick", "--wait", check=True).stdout.split()[0]
    job = read_job(project_dir, job_id)
    assert job.state is S.PULLED and job.hub == "ssh:box"
    assert (project_dir / "models" / "quick" / "w.bin").read_bytes() == b"w" * 100


def test_sshd_dies_mid_run_the_run_goes_on_and_is_pulled_when_back(
        project_dir: Path, ssh_host: Host, sshd: Any, orch: Orch) -> None:
    """The connection drops mid-run (sshd killed): the worker, detached from the
    session, finishes and seals; the job is neither lost nor run again while the daemon
    cannot see the host; once sshd is back the result is pulled. One attempt."""
    settings(project_dir)
    write(project_dir, "train.py", TINY_KERAS_SCRIPT)
    job_id = submit(orch, "train.py", "--name", "cut", "--on", "ssh:box", "--",
                    "--epochs", "8", "--sleep", "0.5")
    wait_for(lambda: (read_job(project_dir, job_id).progress.get("completed_epochs") or 0) >= 2,
             timeout=150, message="training under way on the host")
    sshd.kill()
    status = host_hub(ssh_host) / P.status(job_id, 1)
    wait_for(lambda: json.loads(status.read_text()).get("phase") == "succeeded", timeout=120,
             message="the run sealed while sshd was down")
    # longer than the lease (6 s) with the host out of reach: the job still waits for it
    seal = host_hub(ssh_host) / P.result_json(job_id, 1)
    wait_for(lambda: seal.exists(), timeout=30, message="sealed")
    daemon_log = project_dir / ".orch" / "logs" / "daemon.log"
    wait_for(lambda: "out of reach" in daemon_log.read_text(), timeout=30,
             message="the daemon noticed the host is away")
    away = time.monotonic()  # hold the host away for longer than the lease (6 s)
    wait_for(lambda: time.monotonic() - away > 9, timeout=20, message="the lease's length")
    assert read_job(project_dir, job_id).state is S.RUNNING
    sshd.start()
    wait_for(lambda: read_job(project_dir, job_id).state is S.PULLED, timeout=90,
             message="pulled once the host is back")
    with Store(project_dir / ".orch" / "state.db") as store:
        assert [a.outcome for a in store.attempts(job_id)] == ["SUCCEEDED"]
        assert [e.dst for e in store.events(job_id)].count("ASSIGNED") == 1
    assert (project_dir / "models" / "cut" / "model.keras").is_file()


def test_host_worker_killed_lease_expires_and_the_job_resumes_from_its_checkpoint(
        project_dir: Path, ssh_host: Host, orch: Orch) -> None:
    """The host's worker dies (as in a reboot): its lease expires, the job is re-queued,
    a new worker is started on the host and the job resumes from its checkpoint."""
    settings(project_dir)
    write(project_dir, "train.py", TINY_KERAS_SCRIPT)
    job_id = submit(orch, "train.py", "--name", "resume", "--on", "ssh:box", "--",
                    "--epochs", "12", "--sleep", "0.5")
    ckpt = host_hub(ssh_host) / P.ckpt(job_id, 1)

    def trained_some() -> bool:
        return ckpt.exists() and (read_job(project_dir, job_id).progress.get(
            "completed_epochs") or 0) >= 3

    wait_for(trained_some, timeout=150, message="3 epochs and a checkpoint on the host")
    run_pid = json.loads((host_hub(ssh_host) / P.status(job_id, 1)).read_text())["pid"]
    first = read_job(project_dir, job_id).worker_id
    pid = next(w.pid for w in workers(project_dir) if w.id == first)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(run_pid), timeout=20, message="its run died with it")
    wait_for(lambda: read_job(project_dir, job_id).state is S.PULLED, timeout=200,
             message="resumed on a new worker and pulled")
    with Store(project_dir / ".orch" / "state.db") as store:
        attempts = store.attempts(job_id)
    assert [a.outcome for a in attempts] == ["LOST", "SUCCEEDED"]
    assert attempts[1].resumed_from_epoch is not None and attempts[1].resumed_from_epoch >= 3
    assert attempts[1].worker_id != first and attempts[1].worker_id.startswith("box-cpu-")
    log2 = (host_hub(ssh_host) / P.log(job_id, 2)).read_text()
    assert "Epoch 1/12" not in log2


def test_a_host_without_tensorflow_keeps_its_jobs_queued_with_the_reason(
        project_dir: Path, ssh_host: Host, tmp_path: Path, orch: Orch) -> None:
    """A host whose Python lacks TensorFlow takes no work: the job stays QUEUED, the
    daemon says why in one line, `orch hosts list` shows it; once the host is fixed
    (`orch hosts add --replace` while the daemon runs), the job runs."""
    import subprocess
    import sys

    from orchestrator.hosts import Hosts

    settings(project_dir)
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True,
                   timeout=120)
    hosts = Hosts(project_dir / ".orch")
    from dataclasses import replace

    hosts.add(replace(ssh_host, python=str(bare / "bin" / "python")), replace=True)
    write(project_dir, "quick.py", "import os, pathlib\npathlib.Path(os.environ["
                                   "'ORCH_OUTPUT_DIR'], 'w.bin').write_bytes(b'w')\n")
    job_id = submit(orch, "quick.py", "--on", "ssh:box")
    daemon_log = project_dir / ".orch" / "logs" / "daemon.log"
    wait_for(lambda: "TensorFlow is not installed" in daemon_log.read_text(), timeout=60,
             message="the daemon names the problem")
    assert read_job(project_dir, job_id).state is S.QUEUED
    assert daemon_log.read_text().count("TensorFlow is not installed") == 1  # said once
    assert "TensorFlow is not installed" in orch("hosts", "list", check=True).stdout
    hosts.add(ssh_host, replace=True)  # fixed (this Python has TensorFlow): the running
    wait_for(lambda: read_job(project_dir, job_id).state is S.PULLED, timeout=120,
             message="runs once the host is fixed")


def test_one_worker_per_gpu_of_the_host(project_dir: Path, ssh_host: Host, tmp_path: Path,
                                        orch: Orch) -> None:
    """The host's GPUs (its `nvidia-smi`: a stand-in printing two T4s, put on the PATH of
    the host's Python by a wrapper) each get a worker; a job needing a GPU runs on one;
    `orch hosts list`, `orch daemon status`, `orch status` and `orch top` show them."""
    import stat
    import sys
    from dataclasses import replace

    from orchestrator.hosts import Hosts

    settings(project_dir)
    toml = project_dir / "orch.toml"  # the idle GPU worker must outlive the checks below
    toml.write_text(toml.read_text().replace("worker_idle_timeout = 30",
                                             "worker_idle_timeout = 300"))
    fake = tmp_path / "fakebin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho '0, Tesla T4, 15360'\necho '1, Tesla T4, 15360'\n")
    wrapper = tmp_path / "python-with-gpus"
    wrapper.write_text(f"#!/bin/sh\nPATH={fake}:$PATH exec {sys.executable} \"$@\"\n")
    for path in (smi, wrapper):
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    Hosts(project_dir / ".orch").add(replace(ssh_host, python=str(wrapper)), replace=True)
    checked = orch("hosts", "check", "box", check=True).stdout
    assert "gpu 0       Tesla T4, 15360 MB" in checked and "gpu 1" in checked
    write(project_dir, "quick.py", "import os, pathlib\npathlib.Path(os.environ["
                                   "'ORCH_OUTPUT_DIR'], 'w.bin').write_bytes((os.environ["
                                   "'CUDA_VISIBLE_DEVICES'] + os.environ['CUDA_DEVICE_ORDER'])"
                                   ".encode())\n")
    job_id = orch("submit", "quick.py", "--on", "ssh:box", "--gpu", "--name", "g", "--wait",
                  check=True).stdout.split()[0]
    job = read_job(project_dir, job_id)
    assert job.state is S.PULLED and job.worker_id.startswith("box-gpu")
    index = job.worker_id[len("box-gpu")]
    assert (project_dir / "models" / "g" / "w.bin").read_text() == index + "PCI_BUS_ID"
    wait_for(lambda: {w.id.rsplit("-", 1)[0] for w in workers(project_dir)}
             >= {"box-gpu0", "box-gpu1"}, timeout=30, message="a worker per GPU")
    assert all(w.gpu and w.gpu_name == "Tesla T4" for w in workers(project_dir))
    assert "GPU 0 Tesla T4, GPU 1 Tesla T4" in orch("hosts", "list", check=True).stdout
    assert "gpu=Tesla T4" in orch("daemon", "status", check=True).stdout
    for view in (("status",), ("top", "--once")):  # the workers, under the jobs
        shown = orch(*view, check=True).stdout.splitlines()[-1]
        assert shown.startswith("workers: ") and "(ssh:box, Tesla T4)" in shown, shown
        assert shown.count("box-gpu") == 2, shown


def test_removing_a_host_that_jobs_need_is_refused(project_dir: Path, ssh_host: Host,
                                                  orch: Orch) -> None:
    """`orch hosts remove` refuses while a job is queued for the host (one line naming
    it); --force removes it anyway and the job stays queued."""
    settings(project_dir)
    write(project_dir, "quick.py", "print(1)\n")
    # it needs a GPU, which the host has not: it stays queued for it
    job_id = submit(orch, "quick.py", "--on", "ssh:box", "--gpu", "--name", "pending")
    refused = orch("hosts", "remove", "box")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "pending" in refused.stderr and "--force" in refused.stderr
    assert "box" in orch("hosts", "list", check=True).stdout
    orch("hosts", "remove", "box", "--force", check=True)
    assert "no SSH hosts" in orch("hosts", "list", check=True).stdout
    assert read_job(project_dir, job_id).state is S.QUEUED
