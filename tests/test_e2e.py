"""End to end through the real CLI, a real daemon and real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest

from orchestrator import protocol as P
from orchestrator.models import JobState
from orchestrator.procgroup import pid_alive
from orchestrator.store import Store

from .conftest import TINY_KERAS_SCRIPT, read_job, run_orch, wait_for

S = JobState


def submit(root: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = run_orch(root, "submit", *args, env=env, check=True)
    ids = proc.stdout.split()
    assert len(ids) == 1, proc.stdout
    return ids[0]


def hub(root: Path) -> Path:
    return root / ".orch" / "hub"


def state_of(root: Path, job_id: str) -> JobState:
    return read_job(root, job_id).state


def write(root: Path, name: str, text: str) -> Path:
    path = root / name
    path.write_text(text)
    return path


def test_submit_run_and_auto_pull_a_keras_model(project_dir: Path) -> None:
    write(project_dir, "train.py", TINY_KERAS_SCRIPT)
    proc = run_orch(project_dir, "submit", "train.py", "--name", "tiny", "--wait",
                    "--", "--epochs", "3", check=True)
    job_id = proc.stdout.split()[0]
    job = read_job(project_dir, job_id)
    assert job.state is S.PULLED
    model = project_dir / "models" / "tiny" / "model.keras"
    assert model.is_file()
    assert job.pulled_to == ("models/tiny/logs", "models/tiny/model.keras")
    assert job.progress["epochs"] == 3 and job.progress["completed_epochs"] == 3
    assert "accuracy" in job.progress["metrics"]
    metrics = (hub(project_dir) / P.metrics(job_id, 1)).read_text().splitlines()
    assert [json.loads(m)["epoch"] for m in metrics] == [0, 1, 2]
    detail = run_orch(project_dir, "status", "tiny", check=True).stdout
    assert "SUCCEEDED → PULLED" in detail and "saved model.keras" in detail
    table = run_orch(project_dir, "status", check=True).stdout
    assert job_id in table and "PULLED" in table
    verified = run_orch(project_dir, "pull", "tiny", "--verify", check=True).stdout
    assert "verified" in verified and "model.keras" in verified


def test_output_to_project_root_and_working_dir_lookup(project_dir: Path) -> None:
    write(project_dir, "exam.py", "open('mymodel.h5', 'wb').write(b'h5' * 1000)\n")
    run_orch(project_dir, "submit", "exam.py", "--output", "mymodel.h5:.", "--wait", check=True)
    assert (project_dir / "mymodel.h5").read_bytes() == b"h5" * 1000
    assert not (project_dir / "models").exists()


def test_failing_script_ends_failed_with_exit_code_and_log_tail(project_dir: Path) -> None:
    write(project_dir, "crash.py", "print('about to fail')\nraise SystemExit(3)\n")
    proc = run_orch(project_dir, "submit", "crash.py", "--wait")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    job_id = proc.stdout.split()[0]
    job = read_job(project_dir, job_id)
    assert job.state is S.FAILED and job.exit_code == 3
    assert "exited with code 3" in (job.error or "")
    detail = run_orch(project_dir, "status", job_id, check=True).stdout
    assert "about to fail" in detail and "exit code 3" in detail


def test_job_that_writes_no_output_fails_clearly(project_dir: Path) -> None:
    write(project_dir, "noop.py", "print('trained nothing')\n")
    proc = run_orch(project_dir, "submit", "noop.py", "--wait")
    assert proc.returncode == 1
    job = read_job(project_dir, proc.stdout.split()[0])
    assert job.state is S.FAILED
    assert "wrote no output" in (job.error or "")
    assert "wrote no output" in proc.stderr


def test_retry_runs_a_failed_job_as_a_new_attempt(project_dir: Path) -> None:
    write(project_dir, "flaky.py",
          "import os, pathlib\n"
          "if os.environ['ORCH_ATTEMPT'] == '1': raise SystemExit(1)\n"
          "pathlib.Path(os.environ['ORCH_OUTPUT_DIR'], 'ok.txt').write_text('ok')\n")
    proc = run_orch(project_dir, "submit", "flaky.py", "--wait")
    job_id = proc.stdout.split()[0]
    assert proc.returncode == 1
    out = run_orch(project_dir, "retry", job_id, check=True).stdout
    assert "attempt 2" in out
    wait_for(lambda: state_of(project_dir, job_id) is S.PULLED, message="retried job pulled")
    assert (project_dir / "models" / "flaky" / "ok.txt").read_text() == "ok"
    with Store(project_dir / ".orch" / "state.db") as store:
        assert [a.outcome for a in store.attempts(job_id)] == ["FAILED", "SUCCEEDED"]


def test_cancel_running_job_stops_its_process_tree(project_dir: Path) -> None:
    write(project_dir, "forever.py",
          "import subprocess, sys, time\n"
          "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
          "print('child', child.pid, flush=True)\n"
          "while True: time.sleep(0.1)\n")
    job_id = submit(project_dir, "forever.py")
    wait_for(lambda: state_of(project_dir, job_id) is S.RUNNING, message="running")
    log = hub(project_dir) / P.log(job_id, 1)
    line = wait_for(lambda: log.exists() and "child" in log.read_text() and log.read_text(),
                    message="child pid in log")
    child = int(line.split()[1])
    status = json.loads((hub(project_dir) / P.status(job_id, 1)).read_text())
    out = run_orch(project_dir, "cancel", job_id, check=True).stdout
    assert "cancelling" in out
    wait_for(lambda: state_of(project_dir, job_id) is S.CANCELLED, message="cancelled")
    for pid in (status["pid"], child):
        wait_for(lambda pid=pid: not pid_alive(pid), timeout=20, message=f"pid {pid} gone")
    assert not (project_dir / "models").exists()
    again = run_orch(project_dir, "cancel", job_id)
    assert again.returncode == 2 and "nothing to cancel" in again.stderr



def _worker_pid(root: Path, job_id: str) -> int:
    with Store(root / ".orch" / "state.db") as store:
        job = store.get(job_id)
        beat = json.loads((hub(root) / P.heartbeat(job.worker_id)).read_text())
    return int(beat["pid"])


def test_kill_9_worker_mid_training_resumes_from_checkpoint(project_dir: Path) -> None:
    write(project_dir, "train.py", TINY_KERAS_SCRIPT)
    job_id = submit(project_dir, "train.py", "--name", "resume", "--",
                    "--epochs", "12", "--sleep", "0.5")
    ckpt = hub(project_dir) / P.ckpt(job_id, 1)

    def trained_some() -> bool:
        job = read_job(project_dir, job_id)
        return ckpt.exists() and (job.progress.get("completed_epochs") or 0) >= 3

    wait_for(trained_some, timeout=120, message="3 epochs and a checkpoint")
    first_status = json.loads((hub(project_dir) / P.status(job_id, 1)).read_text())
    os.kill(_worker_pid(project_dir, job_id), signal.SIGKILL)
    # the orphaned training process dies with its worker (PR_SET_PDEATHSIG)
    wait_for(lambda: not pid_alive(first_status["pid"]), timeout=20, message="trainer gone")
    wait_for(lambda: state_of(project_dir, job_id) is S.PULLED, timeout=180,
             message="resumed job pulled")
    with Store(project_dir / ".orch" / "state.db") as store:
        attempts = store.attempts(job_id)
        events = store.events(job_id)
    assert [a.outcome for a in attempts] == ["LOST", "PULLED" if False else "SUCCEEDED"]
    assert attempts[1].resumed_from_epoch is not None and attempts[1].resumed_from_epoch >= 3
    assert any(e.dst == "LOST" for e in events)
    assert any(e.dst == "QUEUED" and "attempt 2" in e.message for e in events)
    log2 = (hub(project_dir) / P.log(job_id, 2)).read_text()
    assert "Epoch 1/12" not in log2  # it did not start over
    assert sorted(p.name for p in (project_dir / "models" / "resume").iterdir()) == [
        "logs", "model.keras"]
    # the learning curves kept the lost attempt's epochs: each epoch once, and
    # TensorBoard's events of both attempts
    logs = project_dir / "models" / "resume" / "logs"
    history = [json.loads(line) for line in (logs / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == list(range(12))
    assert len(list((logs / "train").glob("events.out.tfevents.*"))) == 2


def test_kill_9_daemon_loses_nothing_and_reruns_nothing(project_dir: Path) -> None:
    (project_dir / "orch.toml").write_text((project_dir / "orch.toml").read_text()
                                           + "local_slots = 2\n")
    write(project_dir, "train.py", TINY_KERAS_SCRIPT)
    quick = submit(project_dir, "train.py", "--name", "quick", "--", "--epochs", "1")
    slow = submit(project_dir, "train.py", "--name", "slow", "--",
                  "--epochs", "10", "--sleep", "0.4")
    wait_for(lambda: state_of(project_dir, quick) is S.PULLED, timeout=120, message="quick")
    wait_for(lambda: (read_job(project_dir, slow).progress.get("completed_epochs") or 0) >= 2,
             timeout=120, message="slow under way")
    daemon_pid = int((project_dir / ".orch" / "daemon.pid").read_text())
    os.kill(daemon_pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(daemon_pid), message="daemon dead")
    # the worker keeps training and seals its result while no daemon runs
    status = hub(project_dir) / P.status(slow, 1)
    wait_for(lambda: json.loads(status.read_text()).get("phase") == "succeeded", timeout=120,
             message="slow sealed without a daemon")
    assert state_of(project_dir, slow) is S.RUNNING
    run_orch(project_dir, "daemon", "start", check=True)
    wait_for(lambda: state_of(project_dir, slow) is S.PULLED, timeout=60, message="slow pulled")
    with Store(project_dir / ".orch" / "state.db") as store:
        for job_id in (quick, slow):
            assert len(store.attempts(job_id)) == 1
            assert [e.dst for e in store.events(job_id)].count("ASSIGNED") == 1
    assert (project_dir / "models" / "quick" / "model.keras").is_file()
    assert (project_dir / "models" / "slow" / "model.keras").is_file()


def test_daemon_restart_adopts_a_running_worker(project_dir: Path) -> None:
    write(project_dir, "train.py", TINY_KERAS_SCRIPT)
    job_id = submit(project_dir, "train.py", "--", "--epochs", "10", "--sleep", "0.4")
    wait_for(lambda: (read_job(project_dir, job_id).progress.get("completed_epochs") or 0) >= 1,
             timeout=120, message="training under way")
    daemon_pid = int((project_dir / ".orch" / "daemon.pid").read_text())
    os.kill(daemon_pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(daemon_pid), message="daemon dead")
    run_orch(project_dir, "daemon", "start", check=True)
    wait_for(lambda: state_of(project_dir, job_id) is S.PULLED, timeout=120, message="pulled")
    with Store(project_dir / ".orch" / "state.db") as store:
        assert [a.outcome for a in store.attempts(job_id)] == ["SUCCEEDED"]


def _finished_unpulled(project_dir: Path, script: str = "big.py") -> str:
    """Run a job with auto-pull off; return its id once SUCCEEDED."""
    with open(project_dir / "orch.toml", "a") as f:
        f.write("auto_pull = false\n")
    write(project_dir, script,
          "import os, pathlib\n"
          "pathlib.Path(os.environ['ORCH_OUTPUT_DIR'], 'weights.bin')"
          ".write_bytes(os.urandom(1 << 20))\n")
    proc = run_orch(project_dir, "submit", script, "--wait", check=True)
    job_id = proc.stdout.split()[0]
    assert state_of(project_dir, job_id) is S.SUCCEEDED
    return job_id


def test_tampered_result_is_refused_and_nothing_placed(project_dir: Path) -> None:
    job_id = _finished_unpulled(project_dir)
    archive = hub(project_dir) / P.result_tar(job_id, 1)
    data = bytearray(archive.read_bytes())
    data[2000] ^= 0xFF
    archive.write_bytes(bytes(data))
    proc = run_orch(project_dir, "pull", job_id)
    assert proc.returncode == 1
    assert "tampered" in proc.stderr and "Traceback" not in proc.stderr
    assert not (project_dir / "models").exists()
    assert state_of(project_dir, job_id) is S.SUCCEEDED


def test_tar_slip_result_is_refused(project_dir: Path, tmp_path: Path) -> None:
    job_id = _finished_unpulled(project_dir)
    evil = tmp_path / "evil.tar"
    payload = tmp_path / "payload"
    payload.write_text("pwned")
    with tarfile.open(evil, "w") as tar:
        tar.add(payload, arcname="0/ok.txt")
        tar.add(payload, arcname="0/../../../escaped.txt")
    import hashlib

    (hub(project_dir) / P.result_tar(job_id, 1)).write_bytes(evil.read_bytes())
    sealed = json.loads((hub(project_dir) / P.result_json(job_id, 1)).read_text())
    sealed["sha256"] = hashlib.sha256(evil.read_bytes()).hexdigest()
    (hub(project_dir) / P.result_json(job_id, 1)).write_text(json.dumps(sealed))
    proc = run_orch(project_dir, "pull", job_id)
    assert proc.returncode == 1 and "outside" in proc.stderr
    assert not (project_dir / "models").exists()
    assert not list(project_dir.parent.rglob("escaped.txt"))
    assert state_of(project_dir, job_id) is S.SUCCEEDED


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a tiny tmpfs")
def test_full_disk_while_pulling_gives_one_line_and_keeps_the_job(project_dir: Path) -> None:
    job_id = _finished_unpulled(project_dir)
    staging = project_dir / ".orch" / "staging"
    staging.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(staging)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {mounted.stderr!r}")
    try:
        proc = run_orch(project_dir, "pull", job_id)
    finally:
        subprocess.run(["umount", "-l", str(staging)], check=True)
    assert proc.returncode == 1
    assert "disk full" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert state_of(project_dir, job_id) is S.SUCCEEDED
    assert not (project_dir / "models").exists()
    ok = run_orch(project_dir, "pull", job_id, check=True)
    assert "weights.bin" in ok.stdout
    assert state_of(project_dir, job_id) is S.PULLED
    again = run_orch(project_dir, "pull", check=True)
    assert "nothing to pull" in again.stdout


def test_auto_track_instruments_an_unmodified_script(project_dir: Path) -> None:
    plain = TINY_KERAS_SCRIPT.replace(
        "from orchestrator.keras import callbacks, output_dir\n", "import pathlib\n"
    ).replace("callbacks=[Slow(), *callbacks()]", "callbacks=[Slow()]").replace(
        "model.save(output_dir() / a.out)",
        "model.save(pathlib.Path(os.environ['ORCH_OUTPUT_DIR']) / a.out)")
    assert "orchestrator" not in plain
    write(project_dir, "plain.py", plain)
    proc = run_orch(project_dir, "submit", "plain.py", "--auto-track", "--wait", "--",
                    "--epochs", "2", check=True)
    job = read_job(project_dir, proc.stdout.split()[0])
    assert job.state is S.PULLED
    assert job.progress["epochs"] == 2 and job.progress["completed_epochs"] == 2
    assert (hub(project_dir) / P.ckpt(job.id, 1)).is_file()


def test_logs_prints_the_script_output(project_dir: Path) -> None:
    write(project_dir, "talk.py",
          "import os, pathlib\nprint('line one')\nprint('line two')\n"
          "pathlib.Path(os.environ['ORCH_OUTPUT_DIR'], 'x').write_text('x')\n")
    proc = run_orch(project_dir, "submit", "talk.py", "--wait", check=True)
    out = run_orch(project_dir, "logs", proc.stdout.split()[0], "-f", check=True).stdout
    assert out.splitlines()[:2] == ["line one", "line two"]


def test_a_stopped_local_worker_and_its_run_die_before_the_next_attempt(
        project_dir: Path) -> None:
    """SIGSTOP a local worker and its training process: heartbeats stop, the lease (4 s
    here) expires, and before the job is re-queued the daemon kills both, so the
    stale run never trains beside attempt 2. Nothing more is written for attempt 1.
    (A remote zombie, which the daemon cannot kill, is fenced instead: see the Drive
    tests.)"""
    write(project_dir, "train.py", TINY_KERAS_SCRIPT)
    job_id = submit(project_dir, "train.py", "--name", "zombie", "--",
                    "--epochs", "8", "--sleep", "0.5")
    wait_for(lambda: (read_job(project_dir, job_id).progress.get("completed_epochs") or 0) >= 2,
             timeout=120, message="training under way")
    old_worker = _worker_pid(project_dir, job_id)
    status1 = hub(project_dir) / P.status(job_id, 1)
    trainer = json.loads(status1.read_text())["pid"]
    os.kill(old_worker, signal.SIGSTOP)
    os.killpg(trainer, signal.SIGSTOP)
    frozen = status1.read_bytes()
    wait_for(lambda: read_job(project_dir, job_id).attempt == 2, timeout=60,
             message="re-queued as attempt 2")
    assert not pid_alive(trainer) and not pid_alive(old_worker)
    wait_for(lambda: state_of(project_dir, job_id) is S.PULLED, timeout=180, message="pulled")
    assert status1.read_bytes() == frozen  # nothing more written for attempt 1
    assert not (hub(project_dir) / P.result_json(job_id, 1)).exists()
    with Store(project_dir / ".orch" / "state.db") as store:
        outcomes = [a.outcome for a in store.attempts(job_id)]
        history = [e.message for e in store.events(job_id)]
    assert outcomes == ["LOST", "SUCCEEDED"]
    killed = next(i for i, m in enumerate(history) if f"killed the run process {trainer}" in m)
    second = next(i for i, m in enumerate(history) if "(attempt 2)" in m and "assigned" in m)
    assert killed < second, history  # dead before attempt 2 was handed out
    assert any("no heartbeat" in m for m in history)


def test_daemon_commands_and_idle_exit(project_dir: Path) -> None:
    toml = project_dir / "orch.toml"
    # long enough for two CLI calls to find it running on a loaded machine
    toml.write_text(toml.read_text().replace("daemon_idle_timeout = 60",
                                             'daemon_idle_timeout = "5s"'))
    run_orch(project_dir, "init", check=True)
    assert "not running" in run_orch(project_dir, "daemon", "status", check=True).stdout
    assert "started" in run_orch(project_dir, "daemon", "start", check=True).stdout
    assert "running (pid" in run_orch(project_dir, "daemon", "status", check=True).stdout
    # with nothing to do it exits by itself after daemon_idle_timeout
    wait_for(lambda: "not running" in run_orch(project_dir, "daemon", "status").stdout,
             timeout=30, message="idle daemon exits")
    toml.write_text(toml.read_text().replace('daemon_idle_timeout = "5s"',
                                             "daemon_idle_timeout = 60"))  # stop finds it
    run_orch(project_dir, "daemon", "start", check=True)
    out = run_orch(project_dir, "daemon", "stop", check=True).stdout
    assert "stopped" in out
    assert "was not running" in run_orch(project_dir, "daemon", "stop", check=True).stdout


def test_submit_warns_when_no_local_worker_can_take_the_job(project_dir: Path) -> None:
    write(project_dir, "train.py", "print(1)\n")
    proc = run_orch(project_dir, "submit", "train.py", "--gpu",
                    env={"ORCH_GPUS": "none", "ORCH_LOCAL_SLOTS": "0"}, check=True)
    assert "no local GPU" in proc.stderr
    proc = run_orch(project_dir, "submit", "train.py",
                    env={"ORCH_GPUS": "none", "ORCH_LOCAL_SLOTS": "0"}, check=True)
    assert "local_slots is 0" in proc.stderr
    listing = json.loads(run_orch(project_dir, "status", "--json", check=True).stdout)
    assert [j["state"] for j in listing["jobs"]] == ["QUEUED", "QUEUED"]
    run_orch(project_dir, "daemon", "stop", check=True)


def test_pull_to_another_folder_and_pull_all(project_dir: Path, tmp_path: Path) -> None:
    job_id = _finished_unpulled(project_dir)
    elsewhere = tmp_path / "elsewhere"
    out = run_orch(project_dir, "pull", job_id, "--to", str(elsewhere), check=True).stdout
    assert (elsewhere / "weights.bin").stat().st_size == 1 << 20
    assert str(elsewhere) in out
    assert state_of(project_dir, job_id) is S.SUCCEEDED  # --to is a copy, not the pull
    run_orch(project_dir, "pull", check=True)
    assert state_of(project_dir, job_id) is S.PULLED
    placed = project_dir / "models" / "big" / "weights.bin"
    first = placed.read_bytes()
    again = run_orch(project_dir, "pull", "--all", check=True).stdout  # idempotent re-pull
    assert "weights.bin" in again and placed.read_bytes() == first
