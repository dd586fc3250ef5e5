"""The same Keras training script run directly (`python train.py`) and through
`orch submit --on local --wait train.py`, alternating, in one run. Goal ≤ 1.05×.

The orch side includes everything a user waits for: snapshot, queueing, the
worker start, progress reports, a checkpoint per epoch, sealing the result and
pulling the model into the project. The daemon is started once beforehand (as
in a working session, where it is already up).

Run: .venv/bin/python bench/overhead.py [--runs 3] [--epochs 12]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ORCH, compile_package, interleave, report, temp_project, timed

SCRIPT = '''\
import argparse
import numpy as np
import keras
from orchestrator.keras import callbacks, output_dir

p = argparse.ArgumentParser()
p.add_argument("--epochs", type=int, default=12)
a = p.parse_args()
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(20000, 64)).astype("float32")
y = (x[:, :8].sum(axis=1) > 0).astype("float32")
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                          keras.layers.Dense(256, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=a.epochs, batch_size=64, verbose=2, callbacks=callbacks())
model.save(output_dir("direct-out") / "model.keras")
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    compile_package()
    with temp_project("worker_idle_timeout = 600\n", {"train.py": SCRIPT}) as root:
        epochs = ["--epochs", str(args.epochs)]
        timed([*ORCH, "daemon", "start"], root)
        try:
            results = interleave(
                args.runs,
                **{
                    "python train.py": lambda: timed([sys.executable, "train.py", *epochs], root),
                    "orch submit --on local --wait": lambda: timed(
                        [*ORCH, "submit", "--on", "local", "--wait", "train.py", "--", *epochs],
                        root),
                },
            )
        finally:
            timed([*ORCH, "daemon", "stop"], root)
        report(f"wall time of one training run ({args.epochs} epochs)", results,
               "python train.py", goal=1.05)


if __name__ == "__main__":
    main()
