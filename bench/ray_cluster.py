"""Ray workers, side by side with local ones, on a real Ray cluster started here
(`ray start --head` on 127.0.0.1 with no CPUs, plus a node of 2 CPUs; the tests'
tests/raycluster.py):

- a worker's start-up: a job submitted with no worker running, from `orch submit` to
  its run starting, on the cluster (a Ray job: the runtime env with orch's wheel, the
  worker joining the shared-folder hub) against on 2 local slots;
- the makespan of 20 one-second jobs on 2 Ray workers against 2 local slots.

Run: .venv/bin/python bench/ray_cluster.py [--runs 2] [--jobs 20]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ORCH, env, temp_project
from orchestrator.clusters import Cluster, Clusters
from orchestrator.config import Project, load_settings
from orchestrator.store import Store
from tests.raycluster import RayCluster

SETTINGS = ('tick_interval = 0.2\nheartbeat_interval = 0.5\nworker_idle_timeout = 5\n'
            'daemon_idle_timeout = "10m"\ngpus = "none"\n')
JOB = "import os, pathlib, time\ntime.sleep(1)\n" \
      "pathlib.Path(os.environ['ORCH_OUTPUT_DIR'], 'm.bin').write_text('x')\n"


def orch(root: Path, *args: str) -> str:
    return subprocess.run([*ORCH, *args], cwd=root, env=env(), check=True,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout


def wait(root: Path, ids: list[str], states: tuple[str, ...], limit: float = 600) -> float:
    """Seconds until every job in ``ids`` reached one of ``states``."""
    start = time.perf_counter()
    with Store(root / ".orch" / "state.db") as store:
        while True:
            if all((job := store.get(i)) is not None and job.state.value in states
                   for i in ids):
                return time.perf_counter() - start
            if time.perf_counter() - start > limit:
                raise SystemExit(f"jobs not {states} after {limit:.0f} s")
            time.sleep(0.1)


def one_round(cluster: RayCluster, where: str, jobs: int) -> tuple[float, float]:
    """(start-up: submit → running with no worker up, makespan of ``jobs`` jobs)."""
    local = "local_slots = 2\n" if where == "local" else "local_slots = 0\n"
    with temp_project(SETTINGS + local, {"job.py": JOB}) as root:
        project = Project(root, load_settings(root, environ={}))
        project.init()
        on = "local"
        if where == "ray":
            shared = root.parent / "shared"
            shared.mkdir()
            Clusters(project.state_dir).add(Cluster(
                name="lab", address=cluster.address, hub=f"folder:{shared / 'hub'}",
                python=sys.executable, max_workers=2))
            on = "ray:lab"
        try:
            t0 = time.perf_counter()
            first = orch(root, "submit", "--on", on, "job.py").split()[0]
            wait(root, [first], ("RUNNING", "SUCCEEDED", "PULLED"))
            startup = time.perf_counter() - t0  # the submit itself included
            wait(root, [first], ("PULLED",))
            time.sleep(6)  # the workers idle out: the batch starts cold, as the first did
            t0 = time.perf_counter()
            ids = [orch(root, "submit", "--on", on, "--name", f"j{i}", "job.py").split()[0]
                   for i in range(jobs)]
            wait(root, ids, ("PULLED",))
            makespan = time.perf_counter() - t0
        finally:
            subprocess.run([*ORCH, "daemon", "stop"], cwd=root, env=env(),
                           capture_output=True)
            subprocess.run(["pkill", "-f", "--", f"--hub {root.parent}"], capture_output=True)
        return startup, makespan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=20)
    a = parser.parse_args()
    cluster = RayCluster(cpus=2)
    started = time.perf_counter()
    cluster.start()
    print(f"Ray cluster up in {time.perf_counter() - started:.1f} s (head + 1 node of 2 CPUs)")
    results: dict[str, list[tuple[float, float]]] = {"ray": [], "local": []}
    try:
        for _ in range(a.runs):
            for where in results:
                results[where].append(one_round(cluster, where, a.jobs))
                cluster_free(cluster)
    finally:
        cluster.stop()
    med = {w: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
           for w, rs in results.items()}
    print(f"\nworker start-up (submit → running, no worker up; median of {a.runs})")
    print(f"  ray:lab  {med['ray'][0]:6.2f} s\n  local    {med['local'][0]:6.2f} s"
          f"\n  ratio    {med['ray'][0] / med['local'][0]:6.2f}x")
    print(f"\n{a.jobs} one-second jobs, 2 workers (makespan; median of {a.runs})")
    print(f"  ray:lab  {med['ray'][1]:6.2f} s\n  local    {med['local'][1]:6.2f} s"
          f"\n  ratio    {med['ray'][1] / med['local'][1]:6.2f}x")


def cluster_free(cluster: RayCluster) -> None:
    deadline = time.monotonic() + 60
    while cluster.free_cpus() < cluster.cpus and time.monotonic() < deadline:
        time.sleep(0.5)


if __name__ == "__main__":
    main()
