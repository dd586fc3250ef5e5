"""`orch sandbox`: the local Drive server run detached (up, status, down), a project
pointed at it (use), and the hybrid story end to end: the daemon launches stand-in
Colab sessions through the ``colab_cli`` setting, each runs orch's real notebook on
a local kernel, and jobs submitted with no ``--on`` train both here and there."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orchestrator.models import JobState
from orchestrator.procgroup import pid_alive
from orchestrator.store import Store

from .conftest import FAST_SETTINGS, SAVE_SCRIPT, needs_nbclient, read_job, run_orch, wait_for

S = JobState


def server_doc(folder: Path) -> dict[str, object]:
    return dict(json.loads((folder / "server.json").read_text()))


def test_up_is_idempotent_and_down_stops_the_server(tmp_path: Path, sandbox_dir: Path) -> None:
    first = run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), check=True)
    assert "started the sandbox" in first.stdout and "orch sandbox use" in first.stdout
    assert "stand-in" in first.stdout
    doc = server_doc(sandbox_dir)
    pid, url = int(str(doc["pid"])), str(doc["url"])
    assert pid_alive(pid) and url.startswith("http://127.0.0.1:")

    again = run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), check=True)
    assert "already running" in again.stdout and f"pid {pid}" in again.stdout
    assert server_doc(sandbox_dir)["pid"] == pid

    status = run_orch(tmp_path, "sandbox", "status", "--dir", str(sandbox_dir), check=True)
    assert f"Drive server: {url} (pid {pid})" in status.stdout

    down = run_orch(tmp_path, "sandbox", "down", "--dir", str(sandbox_dir), check=True)
    assert f"stopped the sandbox's Drive server (pid {pid})" in down.stdout
    wait_for(lambda: not pid_alive(pid), timeout=15, message="the server gone")
    assert not (sandbox_dir / "server.json").exists()
    status = run_orch(tmp_path, "sandbox", "status", "--dir", str(sandbox_dir), check=True)
    assert "not running" in status.stdout
    again = run_orch(tmp_path, "sandbox", "down", "--dir", str(sandbox_dir), check=True)
    assert "was not running" in again.stdout


def test_up_takes_the_same_port_again(tmp_path: Path, sandbox_dir: Path) -> None:
    """Projects pointed at the sandbox keep their `drive_url` across down and up."""
    run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), check=True)
    url = server_doc(sandbox_dir)["url"]
    run_orch(tmp_path, "sandbox", "down", "--dir", str(sandbox_dir), check=True)
    run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), check=True)
    assert server_doc(sandbox_dir)["url"] == url
    bad = run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), "--port", "99999")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_down_stops_only_what_the_sandbox_started(tmp_path: Path, sandbox_dir: Path) -> None:
    """A stale session file (a reboot, a reused pid) names a process the sandbox did not
    start: `down` leaves it alone. A server that stopped answering is still stopped."""
    import signal
    import subprocess

    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        session = sandbox_dir / "sessions" / "old"
        session.mkdir(parents=True)
        (session / "session.json").write_text(json.dumps({
            "name": "old", "gpu": None, "state": "running", "created_at": 0.0,
            "pid": other.pid, "kernel_pid": other.pid, "pid_start": 1, "kernel_start": 1}))
        run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), check=True)
        pid = int(str(server_doc(sandbox_dir)["pid"]))
        os.kill(pid, signal.SIGSTOP)  # alive, silent
        try:
            up = run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir))
            assert up.returncode != 0 and "does not answer" in up.stderr, up
            down = run_orch(tmp_path, "sandbox", "down", "--dir", str(sandbox_dir),
                            check=True)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert "session old" not in down.stdout
        assert f"stopped the sandbox's Drive server (pid {pid})" in down.stdout
        wait_for(lambda: not pid_alive(pid), timeout=20, message="the silent server gone")
        assert other.poll() is None  # the stranger lives on
    finally:
        other.kill()
        other.wait()


def test_the_default_folder_comes_from_the_environment(tmp_path: Path,
                                                       sandbox_dir: Path) -> None:
    env = {"ORCH_SANDBOX_DIR": str(sandbox_dir)}
    run_orch(tmp_path, "sandbox", "up", env=env, check=True)
    assert (sandbox_dir / "server.json").is_file()
    status = run_orch(tmp_path, "sandbox", "status", env=env, check=True)
    assert str(sandbox_dir) in status.stdout and "Drive server: http" in status.stdout


def test_bad_dir_is_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for bad in (afile, afile / "below"):
        out = run_orch(tmp_path, "sandbox", "up", "--dir", str(bad))
        assert out.returncode == 2, out
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("orch: error: sandbox")
        assert "Traceback" not in out.stderr
    assert afile.read_text() == "x"


def test_use_needs_a_running_sandbox(tmp_path: Path, sandbox_dir: Path,
                                     project_dir: Path) -> None:
    before = (project_dir / "orch.toml").read_text()
    out = run_orch(project_dir, "sandbox", "use", "--dir", str(sandbox_dir))
    assert out.returncode == 1 and "orch sandbox up" in out.stderr
    assert out.stderr.count("\n") == 1
    assert (project_dir / "orch.toml").read_text() == before


def test_use_points_the_project_at_the_sandbox(tmp_path: Path, sandbox_dir: Path,
                                               project_dir: Path) -> None:
    run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), check=True)
    args = ("sandbox", "use", "--dir", str(sandbox_dir), "--colab-workers", "2",
            "--colab-startup", "20s")
    run_orch(project_dir, *args, check=True)
    first = (project_dir / "orch.toml").read_text()
    run_orch(project_dir, *args, check=True)  # idempotent: the same settings again
    assert (project_dir / "orch.toml").read_text() == first
    assert first.startswith(FAST_SETTINGS)
    assert first.count("colab_workers") == 1 and 'hub = "drive"' in first
    creds = project_dir / ".orch" / "sandbox-drive-credentials.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    # the project's settings reach the server: orch auth status signs in there
    who = run_orch(project_dir, "auth", "status", check=True).stdout
    assert "you@sandbox.invalid" in who and str(creds) in who
    shown = run_orch(project_dir, "config", check=True).stdout
    assert "orchestrator.sandbox.colab_cli" in shown and "colab_startup" in shown
    secrets = json.loads((sandbox_dir / "secrets.json").read_text())
    from orchestrator.identity import load_identity

    assert secrets == {"ORCH_HUB_KEY": load_identity(project_dir / ".orch").key}
    assert (sandbox_dir / "secrets.json").stat().st_mode & 0o777 == 0o600


def test_hybrid_jobs_train_locally_and_on_stand_in_colab(tmp_path: Path, sandbox_dir: Path,
                                                         project_dir: Path) -> None:
    """Three jobs, no --on, one local slot and up to two Colab sessions that orch
    launches itself: placement keeps one job here and sends the others to the stand-in
    sessions, whose kernels run the real notebook against the local Drive server."""
    needs_nbclient()
    run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), check=True)
    with open(project_dir / "orch.toml", "a") as f:
        f.write('local_slots = 1\ngpus = "none"\ndrive_poll_interval = 0.3\n'
                "remote_lease_ttl = 60\n")
    (project_dir / "save.py").write_text(SAVE_SCRIPT)
    run_orch(project_dir, "sandbox", "use", "--dir", str(sandbox_dir), "--colab-workers", "2",
             "--colab-startup", "5s", check=True)
    ids = [run_orch(project_dir, "submit", "--name", f"job{i}", "--estimate", "2m",
                    "save.py", "--", "4", check=True).stdout.split()[0] for i in range(3)]

    def sessions() -> list[str]:
        out = run_orch(tmp_path, "sandbox", "status", "--dir", str(sandbox_dir)).stdout
        return [ln for ln in out.splitlines() if ln.startswith("Colab stand-in session")]

    for job_id in ids:
        wait_for(lambda j=job_id: read_job(project_dir, j).state in (S.PULLED, S.FAILED),
                 timeout=240, interval=0.5, message=f"{job_id} pulled "
                 f"(launch log: {launch_log(project_dir)})")
    jobs = [read_job(project_dir, j) for j in ids]
    assert all(j.state is S.PULLED for j in jobs), [(j.name, j.state, j.error) for j in jobs]
    workers = [j.worker_id or "" for j in jobs]
    assert any(w.startswith("local-") for w in workers), workers
    assert any(w.startswith("colab-") for w in workers), workers
    with Store(project_dir / ".orch" / "state.db") as store:
        for job in jobs:
            pulls = [e for e in store.events(job.id) if e.dst == "PULLED"]
            assert len(pulls) == 1, (job.name, pulls)
            model = project_dir / "models" / job.name / "model.bin"
            assert model.read_bytes() == job.id.encode() * 1000
    # the daemon launched the sessions through the stand-in colab CLI: their kernels run
    # the notebook in the sandbox folder (orch installed into each session's pip target)
    launched = sessions()
    assert launched and all("running" in ln for ln in launched), launched
    for folder in (sandbox_dir / "sessions").iterdir():
        assert (folder / "site" / "orchestrator" / "worker.py").is_file()
        assert (folder / "adc.json").stat().st_mode & 0o777 == 0o600
    run_orch(project_dir, "daemon", "stop", check=True)
    down = run_orch(tmp_path, "sandbox", "down", "--dir", str(sandbox_dir), check=True)
    assert down.stdout.count("stopped Colab stand-in session") == len(launched)
    kernels = [json.loads((f / "session.json").read_text())["kernel_pid"]
               for f in (sandbox_dir / "sessions").iterdir()]
    for pid in kernels:
        wait_for(lambda p=pid: not pid_alive(p), timeout=20, message=f"kernel {pid} gone")


def launch_log(project_dir: Path) -> str:
    log = project_dir / ".orch" / "logs" / "colab-launch.log"
    return log.read_text()[-2000:] if log.exists() else "(none)"


def test_the_stand_in_google_package_is_not_importable(tmp_path: Path) -> None:
    """The stand-in google.colab is a plain folder for sandbox kernels only."""
    import subprocess
    import sys

    from .conftest import orch_env

    code = ("import importlib.util, orchestrator.sandbox\n"
            "print(importlib.util.find_spec('google.colab') is None)")
    out = subprocess.run([sys.executable, "-c", code], env=orch_env(), cwd=tmp_path,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
    assert os.path.isfile(Path(__file__).parent.parent / "orchestrator" / "sandbox" /
                          "standin" / "google" / "colab" / "userdata.py")


def test_stand_in_colab_cli_refuses_in_one_line(tmp_path: Path, sandbox_dir: Path) -> None:
    import subprocess
    import sys

    from .conftest import orch_env

    def colab(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "orchestrator.sandbox.colab_cli",
                               "--dir", str(sandbox_dir), *args], env=orch_env(),
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)

    down = colab("new", "-s", "one")
    assert down.returncode == 1 and "orch sandbox up" in down.stderr
    assert down.stderr.count("\n") == 1
    run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), check=True)
    nb = tmp_path / "nb.ipynb"
    nb.write_text("{}")
    missing = colab("exec", "-s", "nope", "-f", str(nb))
    assert missing.returncode == 1 and "run `new -s nope` first" in missing.stderr
    made = colab("new", "-s", "one", "--gpu", "T4")
    assert made.returncode == 0 and "stand-in Colab session one" in made.stdout
    assert json.loads((sandbox_dir / "sessions" / "one" / "session.json").read_text())[
        "gpu"] == "T4"
    assert colab("stop", "-s", "one").returncode == 0
    assert colab("stop", "-s", "other").returncode == 1


def test_the_drive_endpoint_setting_and_the_environment(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    from orchestrator.config import Project, load_settings

    (tmp_path / "orch.toml").write_text('drive_url = "http://127.0.0.1:9/"\n')
    monkeypatch.delenv("ORCH_DRIVE_ROOT_URL", raising=False)
    project = Project(tmp_path, load_settings(tmp_path, environ={}))
    assert project.drive_url == "http://127.0.0.1:9/"
    monkeypatch.setenv("ORCH_DRIVE_ROOT_URL", "http://127.0.0.1:10/")
    assert project.drive_url == "http://127.0.0.1:10/"  # the environment wins
    assert Project(tmp_path, load_settings(tmp_path / "none", environ={})).drive_url == \
        "http://127.0.0.1:10/"
