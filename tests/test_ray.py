"""Ray clusters as a place, against a real Ray started on this machine
(tests/raycluster.py: a head with no CPUs and a node of 2): `orch clusters`, jobs
spread over workers that are Ray jobs, a node lost mid-job, cancel reaching a worker
that does not answer, and a cluster that cannot be reached."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from orchestrator.models import JobState
from orchestrator.procgroup import pid_alive
from orchestrator.store import Store

from .conftest import SAVE_SCRIPT, TINY_KERAS_SCRIPT, read_job, run_orch, wait_for

S = JobState


def settings(project_dir: Path, extra: str) -> None:
    with (project_dir / "orch.toml").open("a") as f:
        f.write(extra)


def one_line_error(proc: Any, *needles: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def ray_jobs(address: str) -> dict[str, Any]:
    from ray.job_submission import JobSubmissionClient

    return {j.submission_id: j for j in JobSubmissionClient(address).list_jobs()}


def test_clusters_add_check_list_remove(project_dir: Path, ray_cluster: Any,
                                        tmp_path: Path) -> None:
    run_orch(project_dir, "init", check=True)
    shared = tmp_path / "shared"
    shared.mkdir()
    out = run_orch(project_dir, "clusters", "add", "Lab", ray_cluster.address, "--hub",
                   f"folder:{shared / 'hub'}", check=True).stdout
    assert "added Ray cluster lab" in out and str(shared / "hub") in out
    check = run_orch(project_dir, "clusters", "check", "lab", check=True).stdout
    assert "Ray 2." in check and "nodes   2" in check and "cpus    2 free of 2" in check
    key = shared / "hub.key"  # the project's key for the workers: beside the hub, private
    assert key.stat().st_mode & 0o777 == 0o600 and not (shared / "hub" / "hub.key").exists()
    listed = run_orch(project_dir, "clusters", "list", check=True).stdout
    assert listed.startswith("lab") and "ok: Ray 2." in listed and "2 node(s)" in listed

    one_line_error(run_orch(project_dir, "clusters", "add", "lab", ray_cluster.address,
                            "--hub", f"folder:{shared / 'hub'}"), "exists", "--replace")
    one_line_error(run_orch(project_dir, "clusters", "add", "x", "127.0.0.1:8265", "--hub",
                            f"folder:{shared}"), "bad cluster address", "http://HEAD:8265")
    one_line_error(run_orch(project_dir, "clusters", "add", "x", ray_cluster.address,
                            "--hub", "drive"), "Google sign-in", "never sends")
    one_line_error(run_orch(project_dir, "clusters", "add", "x", ray_cluster.address,
                            "--hub", "folder:relative/path"), "folder:/absolute/path")
    one_line_error(run_orch(project_dir, "clusters", "add", "x", ray_cluster.address,
                            "--hub", "folder:/nonexistent/parent/hub"), "mount the shared")
    one_line_error(run_orch(project_dir, "submit", "x.py", "--on", "ray:nosuch"),
                   "'nosuch'", "known: lab", "orch clusters add nosuch")

    from tests.sshd import free_port

    run_orch(project_dir, "clusters", "add", "down", f"http://127.0.0.1:{free_port()}",
             "--hub", f"folder:{shared / 'hub2'}", check=True)
    one_line_error(run_orch(project_dir, "clusters", "check", "down"), "cluster down",
                   "cannot connect")
    assert "PROBLEM: cluster down" in run_orch(project_dir, "clusters", "list").stdout

    (project_dir / "train.py").write_text("print(1)\n")
    held = run_orch(project_dir, "submit", "--on", "ray:lab", "--estimate", "1h",
                    "train.py", check=True).stdout.split()[0]
    one_line_error(run_orch(project_dir, "clusters", "remove", "lab"), "still has 1 job",
                   "--force")
    run_orch(project_dir, "cancel", held, check=True)
    assert "removed Ray cluster lab" in run_orch(project_dir, "clusters", "remove", "lab",
                                                 check=True).stdout
    assert "lab" not in run_orch(project_dir, "clusters", "list", check=True).stdout


def test_twenty_jobs_spread_over_ray_workers_each_pulled_once(project_dir: Path,
                                                             ray_project: Any,
                                                             ray_cluster: Any) -> None:
    (project_dir / "save.py").write_text(SAVE_SCRIPT)
    ids = [run_orch(project_dir, "submit", "--on", "ray:lab", "--name", f"m{i}", "save.py",
                    "--", "0.3", check=True).stdout.split()[0] for i in range(20)]
    seen: set[str] = set()

    def workers_line() -> bool:
        out = run_orch(project_dir, "status").stdout
        seen.update(ln for ln in out.splitlines() if ln.startswith("workers:"))
        return all(read_job(project_dir, j).state is S.PULLED for j in ids)

    wait_for(workers_line, timeout=300, interval=1.0, message="20 jobs pulled")
    with Store(project_dir / ".orch" / "state.db") as store:
        jobs = [store.get(j) for j in ids]
        attempts = {j: store.attempts(j) for j in ids}
        events = {j: [e.dst for e in store.events(j)] for j in ids}
    assert all([a.outcome for a in attempts[j]] == ["SUCCEEDED"] for j in ids)
    assert all(events[j].count("PULLED") == 1 and events[j].count("ASSIGNED") == 1
               for j in ids)
    used = {j.worker_id for j in jobs}
    assert len(used) >= 2 and all(w and w.startswith("lab-ray-") for w in used)
    for job in jobs:
        model = project_dir / "models" / job.name / "model.bin"
        assert model.read_bytes() == job.id.encode() * 1000
    assert any("Ray job lab-ray-" in line and "(ray:lab)" in line for line in seen)
    on_ray = ray_jobs(ray_cluster.address)
    assert used <= set(on_ray)  # every worker was a Ray job of that id
    meta = on_ray[next(iter(used))].metadata
    assert meta["orch_worker"] == next(iter(used)) and meta["orch_project"]


def test_auto_placement_starts_ray_workers_and_learns_their_start_up(
        project_dir: Path, ray_project: Any) -> None:
    """With no local slot, an `--on auto` job goes to the cluster by placement;
    `orch explain` shows the cluster's worker (to start, then the one that ran it),
    and the time a worker took to join is learned for the next plan."""
    import hashlib

    from orchestrator import __version__
    from orchestrator.clusters import STARTUP, Clusters

    settings(project_dir, 'local_slots = 0\ngpus = "none"\n')
    (project_dir / "save.py").write_text(SAVE_SCRIPT)
    job_id = run_orch(project_dir, "submit", "save.py", "--name", "auto", "--wait",
                      check=True).stdout.split()[0]
    job = read_job(project_dir, job_id)
    assert job.state is S.PULLED and job.hub == "ray:lab" and job.target == "auto"
    explained = run_orch(project_dir, "explain", job_id, check=True).stdout
    assert "lab-cpu0 (to start) (cpu:ray)" in explained, explained
    assert f"assigned to {job.worker_id}" in explained and job.worker_id.startswith("lab-ray-")
    status = Clusters(project_dir / ".orch").status("lab")
    assert status is not None and status.startup != STARTUP and 0 < status.startup < 120
    # Ray keeps a wheel by its name: the name carries its content's sha256
    [wheel] = (project_dir / ".orch" / "ray").glob("*.whl")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()[:16]
    assert wheel.name == f"orch-{__version__}-0{sha}-py3-none-any.whl"


def test_the_hub_of_an_ssh_host(project_dir: Path, ssh_host: Any, ray_cluster: Any,
                                tmp_path: Path) -> None:
    """``--hub ssh:box``: the cluster's workers use the SSH host's hub folder (the head
    node's, which the nodes see: here the same disk), the daemon reads it over SFTP,
    and the key is the one orch installs on the host. One job end to end."""
    import sys

    out = run_orch(project_dir, "clusters", "add", "lab", ray_cluster.address, "--hub",
                   "ssh:box", "--python", sys.executable, check=True).stdout
    assert "the hub of SSH host box" in out
    check = run_orch(project_dir, "clusters", "check", "lab", check=True).stdout
    assert f"hub     {tmp_path / 'host'}/hub (SSH host box's hub, over SFTP" in check
    one_line_error(run_orch(project_dir, "clusters", "add", "x", ray_cluster.address,
                            "--hub", "ssh:nosuch"), "no SSH host 'nosuch'")
    (project_dir / "save.py").write_text(SAVE_SCRIPT)
    job_id = run_orch(project_dir, "submit", "--on", "ray:lab", "save.py",
                      check=True).stdout.split()[0]
    wait_for(lambda: read_job(project_dir, job_id).state is S.PULLED, timeout=120,
             interval=0.5, message="pulled through the SSH host's hub")
    job = read_job(project_dir, job_id)
    assert job.hub == "ssh:box" and job.worker_id.startswith("lab-ray-")
    assert (project_dir / "models" / "save" / "model.bin").read_bytes() == \
        job_id.encode() * 1000
    assert (tmp_path / "host" / "secret" / "key").stat().st_mode & 0o777 == 0o600
    status = run_orch(project_dir, "status", check=True).stdout
    assert f"Ray job {job.worker_id} (ssh:box)" in status, status


def test_node_lost_mid_job_resumes_from_its_checkpoint(project_dir: Path, ray_project: Any,
                                                       ray_cluster: Any) -> None:
    settings(project_dir, "remote_lease_ttl = 90\n")  # Ray says the node died first
    (project_dir / "train.py").write_text(TINY_KERAS_SCRIPT)
    job_id = run_orch(project_dir, "submit", "--on", "ray:lab", "--name", "resume",
                      "train.py", "--", "--epochs", "12", "--sleep", "0.8",
                      check=True).stdout.split()[0]
    wait_for(lambda: (read_job(project_dir, job_id).progress.get("completed_epochs") or 0)
             >= 3, timeout=240, interval=0.5, message="3 epochs on the cluster")
    ray_cluster.kill_node("node2")
    try:
        wait_for(lambda: read_job(project_dir, job_id).attempt == 2, timeout=120,
                 interval=0.5, message="Ray's report of the lost node re-queues the job")
        with Store(project_dir / ".orch" / "state.db") as store:
            lost = store.attempts(job_id)[0]
            why = next(e.message for e in store.events(job_id) if e.dst == "LOST")
        assert lost.outcome == "LOST"
        assert "Ray job lab-ray-" in why and "failed: its Ray node died" in why, why
    finally:
        ray_cluster.add_node("node2")
    wait_for(lambda: read_job(project_dir, job_id).state is S.PULLED, timeout=240,
             interval=0.5, message="the job resumed on the new node and pulled")
    with Store(project_dir / ".orch" / "state.db") as store:
        attempts = store.attempts(job_id)
    assert [a.outcome for a in attempts] == ["LOST", "SUCCEEDED"]
    assert attempts[1].resumed_from_epoch is not None and attempts[1].resumed_from_epoch >= 3
    assert (project_dir / "models" / "resume" / "model.keras").is_file()


def test_cancel_stops_the_ray_job_of_a_worker_that_does_not_answer(
        project_dir: Path, ray_project: Any, ray_cluster: Any) -> None:
    settings(project_dir, "remote_lease_ttl = 6\n")
    (project_dir / "save.py").write_text(SAVE_SCRIPT)
    job_id = run_orch(project_dir, "submit", "--on", "ray:lab", "save.py", "--", "300",
                      check=True).stdout.split()[0]
    wait_for(lambda: read_job(project_dir, job_id).state is S.RUNNING, timeout=120,
             message="running on the cluster")
    job = read_job(project_dir, job_id)
    with Store(project_dir / ".orch" / "state.db") as store:
        worker = next(w for w in store.workers() if w.id == job.worker_id)
    assert worker.pid
    os.kill(worker.pid, signal.SIGSTOP)  # the worker hangs: it answers nothing
    out = run_orch(project_dir, "cancel", job_id, check=True).stdout
    assert job_id in out
    wait_for(lambda: read_job(project_dir, job_id).state is S.CANCELLED, timeout=60,
             message="cancelled once the hung worker's lease ran out")
    wait_for(lambda: str(ray_jobs(ray_cluster.address)[worker.id].status) in
             ("STOPPED", "FAILED"), timeout=60, message="its Ray job stopped")
    with Store(project_dir / ".orch" / "state.db") as store:
        notes = [e.message for e in store.events(job_id)]
    assert any(f"stopped Ray job {worker.id}" in n for n in notes), notes
    wait_for(lambda: not pid_alive(worker.pid), timeout=30, message="the worker process gone")




def queue_on(project_dir: Path, cluster: Any, **changes: Any) -> str:
    """The project's cluster changed as ``changes`` say, and a job queued for it."""
    from dataclasses import replace

    from orchestrator.clusters import Clusters

    Clusters(project_dir / ".orch").add(replace(cluster, **changes), replace=True)
    (project_dir / "save.py").write_text(SAVE_SCRIPT)
    return str(run_orch(project_dir, "submit", "--on", "ray:lab", "save.py",
                        check=True).stdout.split()[0])


def daemon_says(project_dir: Path, words: str, timeout: float) -> str:
    """The daemon's log, once it holds ``words``."""
    log = project_dir / ".orch" / "logs" / "daemon.log"
    wait_for(lambda: log.exists() and words in log.read_text(), timeout=timeout,
             message=f"the daemon's log saying {words!r}")
    return log.read_text()


def test_unreachable_cluster_one_line_and_jobs_stay_queued(project_dir: Path,
                                                           ray_project: Any) -> None:
    from tests.sshd import free_port

    job_id = queue_on(project_dir, ray_project, address=f"http://127.0.0.1:{free_port()}")
    daemon_says(project_dir, "cannot connect", timeout=60)
    wait_for(lambda: "PROBLEM: cluster lab" in run_orch(project_dir, "clusters",
                                                        "list").stdout, timeout=30,
             message="`orch clusters list` shows the problem")
    assert read_job(project_dir, job_id).state is S.QUEUED
    text = (project_dir / ".orch" / "logs" / "daemon.log").read_text()
    assert text.count("cannot connect") == 1 and "Traceback" not in text


def test_workers_that_cannot_start_are_the_clusters_problem(project_dir: Path,
                                                            ray_project: Any) -> None:
    """The cluster's Python does not exist: Ray runs the entrypoint, it fails; after
    three such workers the cluster has a problem, said once with the shell's words,
    and the job stays queued."""
    job_id = queue_on(project_dir, ray_project, python="/no/python")
    text = daemon_says(project_dir, "end before joining", timeout=90)
    assert "exit code 127" in text and text.count("end before joining") == 1
    assert read_job(project_dir, job_id).state is S.QUEUED
    assert "PROBLEM: cluster lab: the workers started there end before joining" in \
        run_orch(project_dir, "clusters", "list").stdout


@pytest.mark.parametrize("message, said", [
    ("Job supervisor actor died: The actor died unexpectedly before finishing this task.\n"
     "The actor died because its node has died. Node Id: 09cc", "its Ray node died"),
    ("Job was intentionally stopped.", "Job was intentionally stopped."),
    ("", "no reason given"),
    ("Job entrypoint command failed with exit code 1, last available logs (truncated to "
     "20,000 chars):\nRunning entrypoint for job x: python -m x\n",
     "Job entrypoint command failed with exit code 1"),
    ("Job entrypoint command failed with exit code 127, last available logs (truncated to "
     "20,000 chars):\n2026-12-05 04:05:24,032\tINFO job_manager.py:581 -- Runtime env is "
     "setting up.\nRunning entrypoint for job x: /no/python -m x\n"
     "/bin/sh: 1: /no/python: not found\n",
     "Job entrypoint command failed with exit code 127: /bin/sh: 1: /no/python: not found"),
])
def test_rays_reasons_in_one_line(message: str, said: str) -> None:
    from orchestrator.raylink import brief

    assert brief(message) == said
