"""An orch project whose remote hub is a folder on a :class:`FakeDrive`, with the
real CLI and daemon, and Drive worker processes: what the Drive tests and the
Drive benchmarks share. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from orchestrator.sandbox.drive import FakeDrive

REPO = Path(__file__).resolve().parent.parent
DRIVE_ENV = "ORCH_DRIVE_ROOT_URL"


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ORCH_* settings, with orch importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["PYTHONPATH"] = str(REPO)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra or {})
    return env


class DriveProject:
    """A project folder at ``root`` whose hub is ``drive:<folder>`` on ``fake``; no
    local workers (``local_slots = 0``, no GPUs), so every job goes to Drive workers.
    ``settings`` are appended to its ``orch.toml``."""

    def __init__(self, root: Path, fake: FakeDrive, folder: str, settings: str = "") -> None:
        self.root = root
        self.fake = fake
        self.folder = folder
        root.mkdir(parents=True, exist_ok=True)
        (root / "orch.toml").write_text(
            f'hub = "drive:{folder}"\nlocal_slots = 0\ngpus = "none"\n{settings}')
        self.credentials = root / ".orch" / "drive-credentials.json"
        fake.write_credentials(self.credentials)
        from orchestrator.identity import identity_path, load_identity

        load_identity(root / ".orch")  # the project's key, which its workers are given
        self.key_file = identity_path(root / ".orch")
        self.env = clean_env({DRIVE_ENV: fake.url})
        self.db = root / ".orch" / "state.db"
        self.workers: list[subprocess.Popen[bytes]] = []

    def orch(self, *args: str, check: bool = False, env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in the project (no standard input, as in CI)."""
        proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=self.root,
                              env={**self.env, **(env or {})}, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"orch {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr[-3000:]}")
        return proc

    def submit(self, *args: str, on: str = "remote") -> str:
        """``orch submit --on remote ARGS``; the job id."""
        return self.orch("submit", "--on", on, *args, check=True).stdout.split()[0]

    def worker(self, name: str, *extra: str, api_url: str | None = None,
               idle_timeout: float = 900, heartbeat: float | None = None,
               poll: float | None = None) -> subprocess.Popen[bytes]:
        """A Drive worker process (``python -m orchestrator.worker --hub drive:…``) with
        orch's Drive defaults unless ``heartbeat``/``poll``/``extra`` say otherwise;
        ``api_url`` points it at another endpoint (a counting relay). Its log is
        ``<name>.log`` beside the project."""
        env = dict(self.env)
        if api_url:
            env[DRIVE_ENV] = api_url
        if heartbeat is not None:
            extra = (*extra, "--heartbeat", str(heartbeat))
        if poll is not None:
            extra = (*extra, "--poll", str(poll))
        with open(self.root.parent / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.worker", "--hub", f"drive:{self.folder}",
                 "--credentials", str(self.credentials), "--key-file", str(self.key_file),
                 "--name", name,
                 "--idle-timeout", str(idle_timeout),
                 "--work-dir", str(self.root.parent / f"work-{name}"), *extra],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.root.parent)
        self.workers.append(proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen[Any], timeout: float = 20) -> None:
        """SIGTERM (an idle worker exits at once, its last heartbeat says so)."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Kill the workers and stop the daemon."""
        for proc in self.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.orch("daemon", "stop", timeout=60)
