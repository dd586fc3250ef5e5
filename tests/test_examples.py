"""The example jobs in jobs/ train for real (2 epochs each, TensorFlow on the CPU)
in the environment an orch worker gives them, and leave models that load.

Each script runs once, as a subprocess with ``ORCH_OUTPUT_DIR``,
``ORCH_RUN_DIR`` and ``ORCH_CHECKPOINT_DIR`` set (what the worker sets); the
tests then read what it left behind. About 40-50 s in all on two CPU cores.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.verify import verify_paths

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 2


@dataclass(frozen=True)
class Example:
    name: str
    model_file: str  # saved next to saved_model/ in $ORCH_OUTPUT_DIR
    val_metric: str  # a key of every metrics.jsonl line
    final_line: str  # regex for the metric line the script prints last
    outputs: int  # width of the model's output


EXAMPLES = {
    e.name: e
    for e in (
        Example("image_classification", "image_classification.h5", "val_accuracy",
                r"^val_accuracy=\d\.\d{4}$", 10),
        Example("text_classification", "text_classification.keras", "val_accuracy",
                r"^val_accuracy=\d\.\d{4}$", 3),
        Example("time_series", "time_series.h5", "val_mae",
                r"^val_mae=\d+\.\d{4} naive_mae=\d+\.\d{4} ", 1),
        Example("regression", "regression.h5", "val_mae",
                r"^val_mae=\d+\.\d{4} mean_mae=\d+\.\d{4} ", 1),
    )
}


@dataclass(frozen=True)
class Run:
    example: Example
    proc: subprocess.CompletedProcess[str]
    cwd: Path
    out: Path
    run_dir: Path
    ckpt: Path

    @property
    def model_file(self) -> Path:
        return self.out / self.example.model_file

    @property
    def saved_model(self) -> Path:
        return self.out / "saved_model"

    def explain(self) -> str:
        return (f"jobs/{self.example.name}.py exited {self.proc.returncode}\n"
                f"--- stdout\n{self.proc.stdout[-4000:]}\n--- stderr\n{self.proc.stderr[-4000:]}")


@pytest.fixture(scope="module", params=list(EXAMPLES))
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One real training run of one example script, as an orch worker starts it."""
    example = EXAMPLES[request.param]
    base = tmp_path_factory.mktemp(example.name)
    cwd, out, run_dir, ckpt = (base / d for d in ("cwd", "out", "run", "ckpt"))
    for d in (cwd, out, run_dir, ckpt):
        d.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update(
        PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
        ORCH_OUTPUT_DIR=str(out), ORCH_RUN_DIR=str(run_dir), ORCH_CHECKPOINT_DIR=str(ckpt),
    )
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / f"{example.name}.py"), "--epochs", str(EPOCHS)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
        stdin=subprocess.DEVNULL,
    )
    result = Run(example, proc, cwd, out, run_dir, ckpt)
    if proc.returncode != 0:
        pytest.fail(result.explain())
    return result


def test_trains_saves_and_prints_the_metric(run: Run) -> None:
    assert run.model_file.is_file(), run.explain()
    assert (run.saved_model / "saved_model.pb").is_file(), run.explain()
    assert re.search(run.example.final_line, run.proc.stdout, re.MULTILINE), run.explain()
    # $ORCH_OUTPUT_DIR wins over the script's own default (models/<name> in cwd)
    assert list(run.cwd.iterdir()) == []


def test_reports_every_epoch_and_checkpoints(run: Run) -> None:
    progress = json.loads((run.run_dir / "progress.json").read_text())
    assert progress["epochs"] == EPOCHS
    assert progress["completed_epochs"] == EPOCHS
    assert progress["finished"] is True
    assert run.example.val_metric in progress["metrics"]
    # BackupAndRestore wrote into $ORCH_CHECKPOINT_DIR; the Reporter packed it
    assert progress["checkpoint_epoch"] == EPOCHS - 1
    assert (run.run_dir / "ckpt.tar").is_file()
    lines = [json.loads(line) for line in
             (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == list(range(EPOCHS))
    assert all("loss" in m and run.example.val_metric in m for m in lines)


def test_saved_model_verifies_and_serves(run: Run) -> None:
    import tensorflow as tf

    lines = verify_paths([run.saved_model])
    assert len(lines) == 1
    assert "(SavedModel)" in lines[0] and f"(1, {run.example.outputs})" in lines[0]
    assert "serving_default" in tf.saved_model.load(str(run.saved_model)).signatures


def test_model_file_loads_and_predicts(run: Run) -> None:
    """What a grader does with the file: ``load_model`` (compiled) and predict."""
    import keras
    import numpy as np
    import tensorflow as tf

    model = keras.models.load_model(run.model_file)
    batch = {
        "image_classification": np.zeros((2, 8, 8, 1), "float32"),
        # string inputs go in as tensors: Keras 3 rejects NumPy object arrays
        "text_classification": tf.constant([["the food was great"], ["it broke"]]),
        "time_series": np.linspace(40, 60, 2 * 20, dtype="float32").reshape(2, 20),
        "regression": np.array([[120, 4, 30, 5, 1, 2, 7, 0]] * 2, "float32"),
    }[run.example.name]
    out = model.predict(batch, verbose=0)
    assert out.shape == (2, run.example.outputs)
    assert np.isfinite(out).all()


def test_model_file_verifies(run: Run) -> None:
    lines = verify_paths([run.model_file])
    assert len(lines) == 1
    assert run.example.model_file in lines[0] and f"(1, {run.example.outputs})" in lines[0]
