"""From a sealed result (result.json written on the hub) to the model in the
project folder, with the daemon running and auto-pull on. Goal under 1 s.

Measured per job as (time of the PULLED transition − ``sealed_at`` in
result.json); the PULLED transition is recorded only after the files are in
place. Printed beside the job's own run time, for scale.

Run: .venv/bin/python bench/pull_latency.py [--jobs 8] [--mb 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ORCH, compile_package, env, temp_project, timed
from orchestrator import protocol as P
from orchestrator.store import Store

SCRIPT = '''\
import os, sys, pathlib
out = pathlib.Path(os.environ["ORCH_OUTPUT_DIR"])
(out / "weights.bin").write_bytes(os.urandom(int(float(sys.argv[1]) * (1 << 20))))
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--mb", type=float, default=50.0, help="size of each job's model")
    args = parser.parse_args()
    compile_package()
    with temp_project("worker_idle_timeout = 600\n", {"save.py": SCRIPT}) as root:
        timed([*ORCH, "daemon", "start"], root)
        latencies, runs = [], []
        try:
            for _ in range(args.jobs):
                proc = subprocess.run([*ORCH, "submit", "--wait", "save.py", "--", str(args.mb)],
                                      cwd=root, env=env(), capture_output=True, text=True,
                                      check=True)
                job_id = proc.stdout.split()[0]
                with Store(root / ".orch" / "state.db") as store:
                    job = store.get(job_id)
                    pulled = next(e.at for e in store.events(job_id) if e.dst == "PULLED")
                sealed = json.loads((root / ".orch" / "hub" / P.result_json(job_id, 1))
                                    .read_text())["sealed_at"]
                latencies.append(pulled - sealed)
                runs.append((job.finished_at or 0) - (job.started_at or 0))
        finally:
            timed([*ORCH, "daemon", "stop"], root)
    med, worst = statistics.median(latencies), max(latencies)
    print(f"\nsealed result → {args.mb:.0f} MB model in the project folder "
          f"(daemon running, folder hub, {args.jobs} jobs)")
    print(f"  median {med * 1000:.0f} ms, worst {worst * 1000:.0f} ms "
          f"(job run time median {statistics.median(runs) * 1000:.0f} ms)")
    print(f"  → {'meets' if worst < 1.0 else 'MISSES'} the goal < 1 s "
          f"(median/goal ratio {med / 1.0:.2f}×)")


if __name__ == "__main__":
    main()
