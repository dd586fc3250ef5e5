"""Training throughput inside the worker against the same script run directly in
the same environment. Goal ≥ 0.97×.

Both runs use the same Keras script with orch's callbacks; the epoch times come
from the ``metrics.jsonl`` each run writes (time between epoch ends, first epoch
left out: it includes graph tracing). The worker is the real one (`python -m
orchestrator.worker --burst`) running the job in its subprocess, with its
progress forwarding, log pushing and checkpoint uploads, as in a Colab notebook.

Run: .venv/bin/python bench/worker_throughput.py [--rounds 3] [--epochs 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import compile_package, env, temp_project
from bench.overhead import SCRIPT
from orchestrator import protocol as P
from orchestrator.config import Project, load_settings
from orchestrator.hubs.folder import FolderHub
from orchestrator.scheduler import Scheduler
from orchestrator.store import Store
from orchestrator.submit import SubmitRequest, submit


def epoch_seconds(metrics: Path) -> float:
    times = [json.loads(line)["time"] for line in metrics.read_text().splitlines()]
    steps = [b - a for a, b in zip(times, times[1:])]
    return statistics.median(steps)


def direct(root: Path, epochs: int, n: int) -> float:
    run = root / f"direct-{n}"
    run.mkdir()
    extra = {"ORCH_RUN_DIR": str(run), "ORCH_OUTPUT_DIR": str(run),
             "ORCH_CHECKPOINT_DIR": str(run / "ckpt")}
    subprocess.run([sys.executable, "train.py", "--epochs", str(epochs)], cwd=root,
                   env=env(extra), check=True, capture_output=True)
    return epoch_seconds(run / "metrics.jsonl")


def in_worker(project: Project, store: Store, epochs: int, n: int) -> float:
    hub = FolderHub(project.hub_dir)
    job = submit(project, SubmitRequest(script=str(project.root / "train.py"),
                                        name=f"w{n}", script_args=("--epochs", str(epochs))),
                 store=store)[0]
    hub.put_doc(P.heartbeat("bench-w"), P.Heartbeat(
        worker_id="bench-w", name="bench-w", host="bench", pid=None, seq=1000 + n,
        state=P.WorkerState.IDLE, capabilities=P.Capabilities(kind="local")))
    Scheduler(project, store, hub).tick()
    subprocess.run([sys.executable, "-m", "orchestrator.worker", "--hub", str(project.hub_dir),
                    "--id", "bench-w", "--name", "bench-w", "--work-dir",
                    str(project.work_dir), "--burst"], env=env(), check=True,
                   capture_output=True)
    return epoch_seconds(project.hub_dir / P.metrics(job.id, 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    compile_package()
    with temp_project("local_slots = 0\n", {"train.py": SCRIPT}) as root:
        project = Project(root, load_settings(root))
        project.init()
        results: dict[str, list[float]] = {"direct": [], "worker": []}
        with Store(project.db_path) as store:
            for n in range(args.rounds):
                results["direct"].append(direct(root, args.epochs, n))
                results["worker"].append(in_worker(project, store, args.epochs, n))
                print(f"  round {n + 1}: direct {results['direct'][-1] * 1000:.0f} ms/epoch, "
                      f"in the worker {results['worker'][-1] * 1000:.0f} ms/epoch", flush=True)
    d, w = statistics.median(results["direct"]), statistics.median(results["worker"])
    ratio = d / w  # throughput ratio: epochs/s in the worker over epochs/s directly
    print(f"\ntraining throughput, median seconds per epoch over {args.rounds} rounds "
          f"({args.epochs} epochs each)")
    print(f"  python train.py directly   {d * 1000:8.1f} ms/epoch")
    print(f"  inside the orch worker     {w * 1000:8.1f} ms/epoch")
    print(f"  → throughput ratio {ratio:.3f}× ({'meets' if ratio >= 0.97 else 'MISSES'} "
          "the goal ≥ 0.97×)")


if __name__ == "__main__":
    main()
