"""Bad state gets one clear line and loses nothing: a damaged or emptied store, a
settings file that is not UTF-8, a read-only project, Ctrl-C during start-up,
submits racing each other, leftovers of killed processes, a long queue, a pull that
fails under `--wait`, and `orch retry` of any finished job."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from orchestrator.models import GpuNeed, JobSpec, JobState
from orchestrator.store import Store

from .conftest import TINY_KERAS_SCRIPT, orch_env, read_job, run_orch, wait_for

S = JobState
NO_WORKERS = {"ORCH_LOCAL_SLOTS": "0", "ORCH_GPUS": "none"}


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, expect: str) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, (proc.returncode, output)
    assert "Traceback" not in output, output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("orch: error: "), proc.stderr
    assert expect in lines[0], lines[0]
    return lines[0]


def queued_project(project_dir: Path, n: int = 3) -> list[str]:
    (project_dir / "train.py").write_text("print(1)\n")
    ids = [run_orch(project_dir, "submit", "train.py", env=NO_WORKERS, check=True)
           .stdout.split()[0] for _ in range(n)]
    run_orch(project_dir, "daemon", "stop", check=True)
    return ids


def test_a_damaged_store_is_one_line_and_kept_as_it_is(project_dir: Path) -> None:
    queued_project(project_dir)
    db = project_dir / ".orch" / "state.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(db.read_bytes())
    data[4096:12288] = os.urandom(8192)  # pages 2-3: the jobs table
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    for args in (["status"], ["status", "--json"], ["submit", "train.py"]):
        proc = run_orch(project_dir, *args, env=NO_WORKERS)
        line = one_line_error(proc, 1 if args[0] == "status" else proc.returncode, "state.db")
        assert "damaged" in line or "not an orch store" in line, line
    assert db.read_bytes() == before  # kept for inspection, untouched


def test_an_emptied_store_is_refused_then_reset_starts_over(project_dir: Path) -> None:
    queued_project(project_dir)
    db = project_dir / ".orch" / "state.db"
    for extra in ("state.db-wal", "state.db-shm"):
        (project_dir / ".orch" / extra).unlink(missing_ok=True)
    db.write_bytes(b"")
    proc = run_orch(project_dir, "status", env=NO_WORKERS)
    one_line_error(proc, 1, "is empty, but this project had a store")
    assert "orch init --reset" in proc.stderr
    assert db.read_bytes() == b""  # not silently re-created
    reset = run_orch(project_dir, "init", "--reset", env=NO_WORKERS, check=True)
    assert "the old store is in" in reset.stdout
    assert run_orch(project_dir, "status", env=NO_WORKERS, check=True).stdout.startswith(
        "no jobs yet")
    assert list((project_dir / ".orch").glob("reset-*/state.db"))


def test_settings_that_are_not_utf8_are_one_line(project_dir: Path) -> None:
    (project_dir / "orch.toml").write_bytes(b"lease_ttl = 4\n# caf\xe9\n")
    proc = run_orch(project_dir, "status")
    one_line_error(proc, 2, "not UTF-8")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a read-only tmpfs")
def test_a_read_only_project_is_one_line(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(ro)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        (ro / "orch.toml").write_text("")
        (ro / "train.py").write_text("print(1)\n")
        run_orch(ro, "init", check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        proc = run_orch(ro, "submit", "train.py", env=NO_WORKERS)
        line = one_line_error(proc, proc.returncode, "")
        assert proc.returncode != 0 and "read-only" in line.lower(), line
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)


SITECUSTOMIZE = '''
import sys

class CtrlC:
    """Ctrl-C while typer is being imported, as a user's impatient key would."""

    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
'''


def test_ctrl_c_during_start_up_ends_quietly(project_dir: Path, tmp_path: Path) -> None:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = orch_env({"PYTHONPATH": os.pathsep.join([str(hook), orch_env()["PYTHONPATH"]])})
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "status"], cwd=project_dir,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr


def test_submits_racing_each_other_all_land(project_dir: Path) -> None:
    (project_dir / "train.py").write_text("print(1)\n")
    run_orch(project_dir, "init", check=True)

    def one(i: int) -> subprocess.CompletedProcess[str]:
        (project_dir / f"extra{i}.py").write_text(f"X = {i}\n")  # every snapshot differs
        return run_orch(project_dir, "submit", "train.py", "--name", f"r{i}", env=NO_WORKERS)

    with ThreadPoolExecutor(8) as pool:
        procs = list(pool.map(one, range(8)))
    for proc in procs:
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    with Store(project_dir / ".orch" / "state.db") as store:
        assert sorted(j.name for j in store.jobs()) == [f"r{i}" for i in range(8)]
    leftovers = [p for p in (project_dir / ".orch").rglob(".*.tmp")]
    assert leftovers == []


def test_the_daemon_cleans_leftovers_of_killed_processes(project_dir: Path) -> None:
    run_orch(project_dir, "init", check=True)
    state = project_dir / ".orch"
    old = time.time() - 3600
    stale = [state / "hub" / "blobs" / ".blob.123.abc.tmp", state / ".snapshot-cache.json.9.x.tmp",
             state / "staging" / "ab12cd34-xyz" / "tree" / "m.h5",
             state / "work" / "local-cpu0-dead00" / "job" / "1" / "log.txt"]
    fresh = state / "hub" / "blobs" / ".blob.456.def.tmp"
    for path in [*stale, fresh]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    for path in stale:
        for p in (path, *path.parents):
            if p == state:
                break
            os.utime(p, (old, old))
    (state / "work" / "blobs").mkdir(exist_ok=True)  # the workers' blob cache stays
    run_orch(project_dir, "daemon", "start", env=NO_WORKERS, check=True)
    wait_for(lambda: "cleaned" in (state / "logs" / "daemon.log").read_text(), timeout=30,
             message="the daemon's clean-up")
    assert [p for p in stale if p.exists()] == []
    assert not (state / "staging" / "ab12cd34-xyz").exists()
    assert not (state / "work" / "local-cpu0-dead00").exists()
    assert fresh.exists() and (state / "work" / "blobs").is_dir()


def test_status_summarises_a_long_queue(project_dir: Path) -> None:
    run_orch(project_dir, "init", check=True)
    with Store(project_dir / ".orch" / "state.db") as store:
        store.insert_jobs([JobSpec(name=f"q{i}", script="train.py", args=(), target="local",
                                   gpu=GpuNeed.ANY, priority=0, estimate_s=None,
                                   snapshot_sha256="ab" * 32, data=(), outputs=(), env=())
                           for i in range(500)])
    out = run_orch(project_dir, "status", env=NO_WORKERS, check=True).stdout
    rows = [ln for ln in out.splitlines() if "QUEUED" in ln]
    assert len(rows) == 20 and rows[0].split()[1] == "q0"  # the next ones to run
    assert "500 job(s): 500 queued; 480 not shown (--all shows every job)" in out
    everything = run_orch(project_dir, "status", "--all", env=NO_WORKERS, check=True).stdout
    assert len([ln for ln in everything.splitlines() if "QUEUED" in ln]) == 500


def test_wait_returns_when_the_pull_fails(project_dir: Path) -> None:
    (project_dir / "save.py").write_text(
        "import os, pathlib\n"
        "pathlib.Path(os.environ['ORCH_OUTPUT_DIR'], 'model.bin').write_bytes(b'm')\n")
    (project_dir / "blocked").write_text("a file where the output's folder should be")
    proc = run_orch(project_dir, "submit", "--wait", "--output", "model.bin:blocked",
                    "save.py", timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("orch: "))
    assert "succeeded but its result was not pulled" in line
    job = read_job(project_dir, proc.stdout.split()[0])
    assert job.state is S.SUCCEEDED and job.pull_error
    detail = run_orch(project_dir, "status", job.id, check=True).stdout
    assert "pull" in detail


def test_retry_a_pulled_job_resumes_and_fresh_starts_over(project_dir: Path) -> None:
    (project_dir / "train.py").write_text(TINY_KERAS_SCRIPT)
    job_id = run_orch(project_dir, "submit", "--wait", "train.py", "--", "--epochs", "3",
                      check=True, timeout=240).stdout.split()[0]
    assert read_job(project_dir, job_id).state is S.PULLED
    again = run_orch(project_dir, "retry", job_id, check=True).stdout
    assert "queued as attempt 2 (resuming from its newest checkpoint)" in again
    wait_for(lambda: read_job(project_dir, job_id).state is S.PULLED, timeout=240,
             message="the retry pulled")
    with Store(project_dir / ".orch" / "state.db") as store:
        resumed = store.attempts(job_id)[1].resumed_from_epoch
    assert resumed == 3  # it restored the last epoch's checkpoint
    run_orch(project_dir, "retry", "--fresh", job_id, check=True)
    wait_for(lambda: read_job(project_dir, job_id).state is S.PULLED, timeout=240,
             message="the fresh retry pulled")
    with Store(project_dir / ".orch" / "state.db") as store:
        third = store.attempts(job_id)[2]
        log = [e.message for e in store.events(job_id)]
    assert third.resumed_from_epoch is None  # from scratch
    assert any("from scratch" in m for m in log)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_a_full_disk_keeps_the_daemon_up_and_nothing_is_lost(project_dir: Path) -> None:
    """A project on a small file system that fills up while a job runs: the daemon
    stays up and says so, and once there is room again the job ends as it should."""
    settings = (project_dir / "orch.toml").read_text()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(project_dir)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    (project_dir / "orch.toml").write_text(settings)
    state = project_dir / ".orch"
    filler = project_dir / "filler.bin"
    try:
        (project_dir / "slow.py").write_text(
            "import os, pathlib, time\n"
            "for _ in range(40):\n    time.sleep(0.2)\n"
            "pathlib.Path(os.environ['ORCH_OUTPUT_DIR'], 'model.bin').write_bytes(b'm' * 100)\n")
        job_id = run_orch(project_dir, "submit", "slow.py", check=True).stdout.split()[0]
        wait_for(lambda: read_job(project_dir, job_id).state is S.RUNNING, timeout=60,
                 message="running")
        with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * (1 << 16))
            except OSError:
                pass
        daemon_log = state / "logs" / "daemon.log"
        wait_for(lambda: "disk is full" in daemon_log.read_text(errors="replace"),
                 timeout=60, message="the daemon saying the disk is full")
        pid = int((state / "daemon.pid").read_text())
        os.kill(pid, 0)  # still up
        filler.unlink()
        wait_for(lambda: read_job(project_dir, job_id).state is S.PULLED, timeout=120,
                 message="the job pulled once there is room")
        assert (project_dir / "models" / "slow" / "model.bin").read_bytes() == b"m" * 100
        os.kill(pid, 0)  # the same daemon, never restarted
        con = sqlite3.connect(state / "state.db")
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
        assert "recovered" in daemon_log.read_text(errors="replace")
    finally:
        filler.unlink(missing_ok=True)
        run_orch(project_dir, "daemon", "stop")
        subprocess.run(["umount", "-l", str(project_dir)], check=False)
