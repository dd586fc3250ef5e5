"""`orch pull --verify` with real TensorFlow on tiny models: with no job names it
verifies every pulled model not verified yet and says how many; TensorFlow's start-up
noise stays out of orch's own output and log tails, never out of the job's log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from orchestrator.config import Project
from orchestrator.models import JobState
from orchestrator.tfnoise import is_noise

from .conftest import TINY_KERAS_SCRIPT, orch_env, read_job, run_orch, wait_for

#: What TensorFlow's C++ logging prints as it loads (none of it may reach orch's output).
TF_NOISE = ("oneDNN", "cuda", "I0000", "E0000", "W0000", "cpu_feature_guard",
            "absl::InitializeLog", "rebuild TensorFlow")


def orch_tf_unset(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI with TF_CPP_MIN_LOG_LEVEL unset, as in a user's shell."""
    env = orch_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=root, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=300)


def pulled(root: Path, job_id: str) -> bool:
    return read_job(root, job_id).state is JobState.PULLED


def assert_quiet(proc: subprocess.CompletedProcess[str]) -> None:
    for line in (proc.stdout + proc.stderr).splitlines():
        assert not any(word in line for word in TF_NOISE), line


def test_verify_without_names_checks_every_pulled_model_once(project_dir: Path) -> None:
    (project_dir / "train.py").write_text(TINY_KERAS_SCRIPT)
    ids = [run_orch(project_dir, "submit", "train.py", "--name", name, "--",
                    "--epochs", "1", "--out", out, check=True).stdout.split()[0]
           for name, out in (("keras", "model.keras"), ("legacy", "model.h5"))]
    for job_id in ids:  # the daemon pulls them: `orch pull` has nothing left to pull
        wait_for(lambda j=job_id: pulled(project_dir, j), timeout=240, interval=0.3,
                 message=f"{job_id} pulled")

    first = orch_tf_unset(project_dir, "pull", "--verify")
    assert first.returncode == 0, first.stderr
    assert "verifying 2 pulled model(s) not verified yet" in first.stdout
    verified = [ln for ln in first.stdout.splitlines() if ln.strip().startswith("verified ")]
    assert len(verified) == 2
    assert any("models/keras/model.keras" in ln for ln in verified)
    assert any("models/legacy/model.h5" in ln for ln in verified)
    assert_quiet(first)

    again = orch_tf_unset(project_dir, "pull", "--verify")
    assert again.returncode == 0, again.stderr
    assert "nothing to verify: all 2 pulled model(s) are verified already" in again.stdout
    assert not [ln for ln in again.stdout.splitlines() if ln.strip().startswith("verified ")]

    # a model changed since (broken here): only it is verified again, and it fails
    (project_dir / "models" / "legacy" / "model.h5").write_bytes(b"not a model")
    broken = orch_tf_unset(project_dir, "pull", "--verify")
    assert broken.returncode == 1
    assert "verifying 1 pulled model(s) not verified yet (1 verified already)" in broken.stdout
    errors = [ln for ln in broken.stderr.splitlines() if ln.startswith("orch: error:")]
    assert len(errors) == 1 and "model.h5 failed to load or predict" in errors[0]
    assert "Traceback" not in broken.stderr
    assert_quiet(broken)


def test_verify_says_plainly_when_there_is_nothing(project: Project) -> None:
    proc = orch_tf_unset(project.root, "pull", "--verify")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "nothing to pull",
        "nothing to verify: no pulled job has a model (.keras, .h5 or SavedModel) in place"]


NOISY_JOB = """\
import os, sys
os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's script would run
import tensorflow as tf
print("epoch 1 loss 0.5", flush=True)
sys.exit(3)
"""


def test_log_tails_drop_tensorflow_noise_but_the_log_keeps_it(project_dir: Path) -> None:
    (project_dir / "noisy.py").write_text(NOISY_JOB)
    proc = run_orch(project_dir, "submit", "noisy.py", "--wait")
    assert proc.returncode == 1
    job_id = proc.stdout.split()[0]
    log = run_orch(project_dir, "logs", job_id, check=True).stdout
    assert "epoch 1 loss 0.5" in log
    assert any(is_noise(ln) for ln in log.splitlines()), log  # TF spoke, in the job's log
    detail = run_orch(project_dir, "status", job_id, check=True).stdout
    assert "epoch 1 loss 0.5" in detail
    assert not any(is_noise(ln) for ln in detail.splitlines()), detail
    assert "cpu_feature_guard" not in detail and "absl::InitializeLog" not in detail
