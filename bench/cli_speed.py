"""`orch submit` and `orch status` with 10,000 jobs in the store, against
`python -c "import typer, rich"` (the floor any typer CLI pays). Goal ≤ 1.3×.

Run: .venv/bin/python bench/cli_speed.py [--runs 15]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ORCH, compile_package, interleave, report, temp_project, timed
from orchestrator.config import Project, load_settings
from orchestrator.models import GpuNeed, JobSpec, JobState
from orchestrator.store import Store


def fill(project: Project, n: int) -> None:
    """n finished jobs with a realistic history, plus a few running ones."""
    spec = JobSpec(name="hist", script="train.py", args=("--epochs", "5"), target="local",
                   gpu=GpuNeed.ANY, priority=0, estimate_s=None, snapshot_sha256="0" * 64,
                   data=(), outputs=(), env=())
    with Store(project.db_path) as store:
        jobs = store.insert_jobs([spec] * n)
        with store.tx() as db:
            db.execute("UPDATE jobs SET state=?, progress=?",
                       (JobState.PULLED.value, '{"epochs": 5, "completed_epochs": 5, '
                        '"metrics": {"loss": 0.1, "accuracy": 0.97}}'))
            db.execute("UPDATE jobs SET state='RUNNING' WHERE seq > ?", (n - 3,))
        assert len(jobs) == n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=10_000)
    args = parser.parse_args()
    with temp_project("local_slots = 0\ndaemon_idle_timeout = 600\n",
                      {"train.py": "print('train')\n"}) as root:
        project = Project(root, load_settings(root))
        project.init()
        compile_package()
        t0 = time.perf_counter()
        fill(project, args.jobs)
        print(f"filled the store with {args.jobs} jobs in {time.perf_counter() - t0:.1f} s")
        timed([*ORCH, "daemon", "start"], root)  # submit then only checks the daemon's lock
        try:
            results = interleave(
                args.runs,
                **{
                    'python -c "import typer, rich"':
                        lambda: timed([sys.executable, "-c", "import typer, rich"], root),
                    "orch submit train.py":
                        lambda: timed([*ORCH, "submit", "train.py"], root),
                    "orch status":
                        lambda: timed([*ORCH, "status"], root),
                    "orch status --json":
                        lambda: timed([*ORCH, "status", "--json"], root),
                },
            )
        finally:
            timed([*ORCH, "daemon", "stop"], root)
        report(f"CLI wall time, {args.jobs} jobs in the store", results,
               'python -c "import typer, rich"', goal=1.3)


if __name__ == "__main__":
    main()
