"""A long queue costs (almost) nothing: `orch status` with 10,000 queued jobs against
10, side by side (goal ≤ 1.2×), and the CPU an idle daemon uses while a queue that no
worker can take waits (10,000 GPU jobs, one live CPU worker; goal < 1% of a core).

Run: .venv/bin/python bench/queue_scale.py [--runs 15] [--seconds 30]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ORCH, compile_package, env, interleave, report, temp_project, timed
from orchestrator.config import Project, load_settings
from orchestrator.models import GpuNeed, JobSpec
from orchestrator.store import Store

FAST = "tick_interval = 1\nheartbeat_interval = 1\ndaemon_idle_timeout = \"10m\"\n"


def queue(root: Path, n: int, gpu: GpuNeed = GpuNeed.ANY) -> None:
    """n queued jobs (and, as a real project has, a little history)."""
    project = Project(root, load_settings(root, environ={}))
    project.init()
    spec = JobSpec(name="queued", script="train.py", args=("--epochs", "5"), target="local",
                   gpu=gpu, priority=0, estimate_s=None, snapshot_sha256="0" * 64,
                   data=(), outputs=(), env=())
    with Store(project.db_path) as store:
        store.insert_jobs([spec] * n)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_daemon_cpu(seconds: float) -> tuple[float, float]:
    """(% of a core, ticks seen) of a daemon whose 10,000 queued GPU jobs no worker can
    take, with one live CPU worker heartbeating every second."""
    with temp_project(FAST + 'gpus = "none"\nlocal_slots = 0\n', {"train.py": "print(1)\n"}) \
            as root:
        queue(root, 10_000, GpuNeed.REQUIRED)
        subprocess.run([*ORCH, "daemon", "start"], cwd=root, env=env(), check=True,
                       capture_output=True)
        hub = root / ".orch" / "hub"
        worker = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.worker", "--hub", str(hub), "--name", "cpu",
             "--idle-timeout", "3600", "--heartbeat", "1", "--work-dir", str(root / "w")],
            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            pid = int((root / ".orch" / "daemon.pid").read_text())
            time.sleep(5)  # start-up done, the worker has joined
            before, started = cpu_seconds(pid), time.monotonic()
            time.sleep(seconds)
            used = cpu_seconds(pid) - before
            return 100 * used / (time.monotonic() - started), used
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
            subprocess.run([*ORCH, "daemon", "stop"], cwd=root, env=env(), check=False,
                           capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    compile_package()
    settings = 'gpus = "none"\nlocal_slots = 0\n'
    with temp_project(settings, {}) as small, temp_project(settings, {}) as big:
        queue(small, 10)
        queue(big, 10_000)
        cmd = [*ORCH, "status"]
        for root in (small, big):
            timed(cmd, root)  # warm caches
        results = interleave(args.runs, **{
            "orch status, 10 queued": lambda: timed(cmd, small),
            "orch status, 10,000 queued": lambda: timed(cmd, big),
        })
    report("orch status: a long queue against a short one", results,
           "orch status, 10 queued", goal=1.2)
    share, used = idle_daemon_cpu(args.seconds)
    verdict = "meets" if share < 1.0 else "MISSES"
    print(f"\nidle daemon, 10,000 queued GPU jobs and one live CPU worker, {args.seconds:.0f} s:"
          f"\n  {used:.2f} s of CPU = {share:.2f}% of a core → {verdict} the goal < 1%")


if __name__ == "__main__":
    main()
