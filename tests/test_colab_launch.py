"""`orch colab --launch` against orch's stand-in for Google's `colab` CLI
(orchestrator/sandbox/colab_cli.py), which behaves as the real one does where orch
depends on it: `exec` cuts a cell after its default timeout unless `--timeout` is
given, the kernel cannot ask for Drive consent, `colab version` reports a version
(before 0.6.0 there is no `exec --timeout`), it refuses a Python older than it needs,
and a CLI not signed in asks for a code on standard input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat

from orchestrator.models import JobState

from .conftest import SAVE_SCRIPT, needs_nbclient, orch_env, read_job, run_orch, wait_for
from .conftest import drive_project as make_drive_project

S = JobState


def standin(sandbox_dir: Path) -> str:
    return f"{sys.executable} -m orchestrator.sandbox.colab_cli --dir {sandbox_dir}"


def test_launch_says_in_one_line_what_the_colab_cli_lacks(project_dir: Path, drive: Any,
                                                          sandbox_dir: Path) -> None:
    p = make_drive_project(project_dir, drive,
                           settings=f'colab_cli = "{standin(sandbox_dir)}"\n')
    newer = f"{sys.version_info.major}.{sys.version_info.minor + 2}"
    notebooks = len(drive.find(name="worker.ipynb"))  # the session's server: other tests
    cases = [
        ({"ORCH_COLAB_CLI": "colab", "PATH": "/usr/bin:/bin"},
         ["not installed", "uv tool install google-colab-cli", "Python 3.13"]),
        ({"ORCH_SANDBOX_COLAB_VERSION": "0.5.11"}, ["too old (0.5.11)", "0.6.0 or newer"]),
        ({"ORCH_SANDBOX_COLAB_NEEDS_PYTHON": newer},
         ["does not run on its Python", f"needs Python {newer}", "Python 3.13"]),
        ({"ORCH_SANDBOX_COLAB_SIGNED_IN": "0"}, ["not signed in", "colab sessions"]),
    ]
    for env, words in cases:
        out = p.orch("colab", "--launch", env=env)
        assert out.returncode == 2, (env, out.stdout, out.stderr)
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
        assert all(w in out.stderr for w in words), (words, out.stderr)
    assert len(drive.find(name="worker.ipynb")) == notebooks  # nothing was published
    bad = p.orch("colab", "--launch", "--gpu", "K80")
    assert bad.returncode == 2 and "choose one of" in bad.stderr


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nbformat.write(nb, str(path))
    return path


def test_the_stand_in_cuts_long_cells_and_cannot_ask_for_consent(tmp_path: Path,
                                                                  sandbox_dir: Path) -> None:
    needs_nbclient()
    run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), check=True)

    def colab(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*standin(sandbox_dir).split(), *args], env=orch_env(env),
                              cwd=tmp_path, capture_output=True, text=True, timeout=180,
                              stdin=subprocess.DEVNULL)

    assert colab("version").stdout.strip() == "Version: 0.8.0"
    assert colab("new", "-s", "one").returncode == 0
    slow = _notebook(tmp_path / "slow.ipynb", "import time\ntime.sleep(4)\nprint('slept')")
    cut = colab("exec", "-s", "one", "-f", str(slow), ORCH_SANDBOX_COLAB_EXEC_TIMEOUT="2")
    assert cut.returncode == 1 and "TimeoutError" in cut.stdout and "slept" not in cut.stdout
    whole = colab("exec", "-s", "one", "-f", str(slow), "--timeout", "60",
                  ORCH_SANDBOX_COLAB_EXEC_TIMEOUT="2")
    assert whole.returncode == 0 and "slept" in whole.stdout
    consent = _notebook(tmp_path / "consent.ipynb",
                        "from google.colab import auth\nauth.authenticate_user()")
    asked = colab("exec", "-s", "one", "-f", str(consent))
    assert asked.returncode == 1 and "consent" in asked.stdout
    old = colab("exec", "-s", "one", "-f", str(slow), "--timeout", "60",
                ORCH_SANDBOX_COLAB_VERSION="0.5.11")
    assert old.returncode == 2 and "--timeout" in old.stderr
    out = colab("sessions", ORCH_SANDBOX_COLAB_SIGNED_IN="0")
    assert out.returncode == 1 and "accounts.google.com" in out.stdout
    assert colab("stop", "-s", "one").returncode == 0


def test_launch_runs_the_worker_cell_past_exec_s_default_timeout(tmp_path: Path,
                                                                 sandbox_dir: Path,
                                                                 project_dir: Path) -> None:
    """The stand-in's exec cuts cells after 3 s by default here; the worker cell runs
    a 2-second job and idles 10 s more: only the `--timeout` orch passes lets it finish.
    The notebook signs in with orch's own Drive sign-in (no consent dialog there)."""
    needs_nbclient()
    run_orch(tmp_path, "sandbox", "up", "--dir", str(sandbox_dir), check=True)
    with open(project_dir / "orch.toml", "a") as f:
        f.write('local_slots = 0\ngpus = "none"\ndrive_poll_interval = 0.3\n')
    (project_dir / "save.py").write_text(SAVE_SCRIPT)
    run_orch(project_dir, "sandbox", "use", "--dir", str(sandbox_dir), check=True)
    job_id = run_orch(project_dir, "submit", "--on", "colab", "save.py", "--", "2",
                      check=True).stdout.split()[0]
    env = {"ORCH_SANDBOX_COLAB_EXEC_TIMEOUT": "3"}
    out = run_orch(project_dir, "colab", "--launch", "--idle", "10s", env=env, check=True)
    assert out.stdout.startswith("https://colab.research.google.com/drive/")
    assert "launched Colab session" in out.stderr
    log = project_dir / ".orch" / "logs" / "colab-launch.log"
    wait_for(lambda: log.is_file() and "stop exited 0" in log.read_text(), timeout=240,
             interval=0.5, message="the launched notebook ran and its session stopped")
    assert "notebook exited 0" in log.read_text(), log.read_text()[-3000:]
    wait_for(lambda: read_job(project_dir, job_id).state is S.PULLED, timeout=60,
             message="the launched notebook's job pulled")
    [session] = list((sandbox_dir / "sessions").iterdir())
    ran = (session / "executed.ipynb").read_text()
    assert "the launcher's sign-in" in ran and "1 job(s) run" in ran
    assert f"installed: {session / 'site'}" in ran  # the wheel, not this machine's orch
    # the copy sent to the runtime carried the sign-in and key (the stand-in keeps
    # what it ran, 0600); here, orch's copy and exec's output copy are gone with the
    # session
    assert (session / "executed.ipynb").stat().st_mode & 0o777 == 0o600
    sent: dict[str, Any] = {}
    exec(nbformat.read(str(session / "executed.ipynb"), as_version=4).cells[1].source, sent)
    assert json.loads(sent["DRIVE_CREDENTIALS"])["refresh_token"]
    assert list((project_dir / ".orch" / "colab").iterdir()) == []
    assert os.environ.get("ORCH_SANDBOX_COLAB_EXEC_TIMEOUT") is None


def test_the_launched_notebook_signs_in_with_orchs_own_sign_in(tmp_path: Path,
                                                                drive: Any) -> None:
    """DRIVE_CREDENTIALS: `orch auth`'s saved grant as an authorized-user document
    (refreshed at its own token endpoint: the notebook's cell signs in with it), a
    service-account key as it is, and one line when there is nothing usable."""
    import pytest

    from orchestrator.errors import NotConfiguredError
    from orchestrator.hubs.drive.api import build_service
    from orchestrator.places.colab_cells import sign_in
    from orchestrator.places.colab_launch import drive_sign_in

    saved = tmp_path / "drive-credentials.json"
    drive.write_credentials(saved)
    info = json.loads(drive_sign_in(saved))
    assert info["type"] == "authorized_user" and info["token_uri"] == drive.token_uri
    creds = sign_in(json.dumps(info))  # the notebook's own cell
    api = build_service(credentials=creds, url=drive.url)
    assert api.about().get(fields="user(emailAddress)").execute()["user"]["emailAddress"]
    key = tmp_path / "sa.json"
    key.write_text(json.dumps({"type": "service_account", "client_email": "a@b"}))
    assert json.loads(drive_sign_in(key))["client_email"] == "a@b"
    with pytest.raises(NotConfiguredError, match="run `orch auth`"):
        drive_sign_in(tmp_path / "none.json")
    grant = json.loads(saved.read_text())
    grant.pop("refresh_token")
    saved.write_text(json.dumps(grant))
    with pytest.raises(NotConfiguredError, match="no refresh_token"):
        drive_sign_in(saved)
