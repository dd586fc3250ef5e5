"""Keras callbacks that report progress to orch and make runs resumable.

``callbacks()`` returns ``[BackupAndRestore(ORCH_CHECKPOINT_DIR/fit-K), CurveLog,
Reporter]``:

- BackupAndRestore saves the model and optimizer state at every epoch end and,
  when a job is re-run after a lost worker, restores it so training resumes at the
  epoch where it stopped.
- CurveLog (:mod:`orchestrator.curvelogs`) writes TensorBoard event files and
  ``history.jsonl`` into ``$ORCH_OUTPUT_DIR/logs/``.
- Reporter writes ``$ORCH_RUN_DIR/progress.json`` (epoch i of N, batch progress
  inside long epochs, latest metrics, ETA), appends ``metrics.jsonl``, and after
  each backup packs the checkpoint folder, with those logs as ``logs/``, into
  ``ckpt.tar`` (a consistent copy the worker uploads; written via a temporary file
  and a rename).

Outside orch (no ``ORCH_RUN_DIR``) the callbacks still work: progress goes
nowhere, no learning-curve logs are written (they need ``ORCH_OUTPUT_DIR``) and
checkpoints go to a temporary folder, so a script runs unchanged on its own.
This module imports Keras lazily: importing it costs nothing.
"""

from __future__ import annotations

import json
import math
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from .atomic import write_atomic, write_with

_FIT_COUNTER = 0
BATCH_REPORT_INTERVAL = 1.0  # seconds between in-epoch progress writes


def finite_floats(logs: dict[str, Any] | None) -> dict[str, float]:
    """The finite numbers of a Keras ``logs`` dict, rounded to 6 decimals."""
    out: dict[str, float] = {}
    for key, value in (logs or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = round(number, 6)
    return out


def make_reporter(run_dir: Path | None, ckpt_root: Path | None,
                  logs: Path | None = None) -> Any:
    """The progress callback (a ``keras.callbacks.Callback``); ``logs``: the run's
    learning-curve logs, packed into each checkpoint archive as ``logs/``."""
    import keras

    class Reporter(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.run_dir = run_dir
            self.ckpt_root = ckpt_root
            self.state: dict[str, Any] = {}
            self._epoch_start = 0.0
            self._train_start = 0.0
            self._epochs_done_here = 0
            self._last_batch_write = 0.0
            self._ckpt_seq = 0

        def _write(self) -> None:
            if self.run_dir is None:
                return
            self.state["updated"] = time.time()
            write_atomic(self.run_dir / "progress.json", json.dumps(self.state).encode())

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            self._train_start = time.time()
            # BackupAndRestore (before us in the list) has restored a checkpoint by now
            # and set the epoch training resumes at: known even if no epoch is left.
            resumed = getattr(self.model, "_initial_epoch", None) or None
            self.state = {
                "epochs": self.params.get("epochs"),
                "batches": self.params.get("steps"),
                "epoch": None,
                "batch": 0,
                "metrics": {},
                "eta_s": None,
                "first_epoch": resumed,
            }
            self._write()

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._epoch_start = time.time()
            if self.state.get("first_epoch") is None:
                self.state["first_epoch"] = epoch
            self.state.update(epoch=epoch, batch=0)
            self._write()

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            now = time.time()
            if now - self._last_batch_write < BATCH_REPORT_INTERVAL:
                return
            self._last_batch_write = now
            self.state["batch"] = batch + 1
            self._write()

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            now = time.time()
            metrics = finite_floats(logs)
            self._epochs_done_here += 1
            per_epoch = (now - self._train_start) / self._epochs_done_here
            epochs = self.state.get("epochs") or epoch + 1
            self.state.update(
                epoch=epoch, completed_epochs=epoch + 1, batch=self.state.get("batches"),
                metrics=metrics, eta_s=round(per_epoch * max(0, epochs - epoch - 1), 1),
                epoch_seconds=round(now - self._epoch_start, 3),
                mean_epoch_seconds=round(per_epoch, 3),
            )
            if self._epochs_done_here == 1:  # what placement packs GPUs by
                peak = gpu_memory_peak_mb()
                if peak is not None:
                    self.state["gpu_mem_peak_mb"] = peak
            if self.run_dir is not None:
                with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"epoch": epoch, "time": now, **metrics}) + "\n")
                self._pack_checkpoint(epoch)
            self._write()

        def _pack_checkpoint(self, epoch: int) -> None:
            """Runs after BackupAndRestore's epoch end: its files are complete now."""
            root = self.ckpt_root
            if root is None or not root.is_dir() or not any(root.iterdir()):
                return

            def not_old_logs(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
                """The restored copy of an earlier attempt's logs gives way to the
                run's own (which began as that copy)."""
                old = logs is not None and (member.name == "./logs"
                                            or member.name.startswith("./logs/"))
                return None if old else member

            def pack(f: Any) -> None:
                with tarfile.open(fileobj=f, mode="w") as tar:
                    tar.add(root, arcname=".", filter=not_old_logs)
                    if logs is not None and logs.is_dir():
                        tar.add(logs, arcname="logs")

            write_with(self.run_dir / "ckpt.tar", pack)  # type: ignore[operator]
            self._ckpt_seq += 1
            self.state.update(checkpoint_epoch=epoch, checkpoint_seq=self._ckpt_seq)

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            self.state["eta_s"] = 0
            self.state["finished"] = True
            self._write()

    return Reporter()


def gpu_memory_peak_mb() -> float | None:
    """The most GPU memory this process has used so far (MB), from the framework Keras
    runs on (TensorFlow or JAX); None without a GPU or when it cannot be told."""
    import sys

    try:
        if "tensorflow" in sys.modules:
            import tensorflow as tf

            if tf.config.list_logical_devices("GPU"):
                return float(tf.config.experimental.get_memory_info("GPU:0")["peak"]) / 2**20
        if "jax" in sys.modules:
            import jax

            device = jax.local_devices()[0]
            if device.platform == "gpu":
                stats = device.memory_stats() or {}
                peak = stats.get("peak_bytes_in_use")
                return None if peak is None else float(peak) / 2**20
    except Exception:  # noqa: BLE001 - a figure we can do without
        return None
    return None


def callbacks(checkpoint: bool = True) -> list[Any]:
    """Callbacks for one ``Model.fit``: checkpoint/resume plus progress reporting.

    Call it once per ``fit``; each call gets its own checkpoint folder
    (``fit-0``, ``fit-1``…), so a script with several fits resumes each correctly
    as long as it calls them in the same order. Under orch it also writes the fit's
    learning curves (TensorBoard and ``history.jsonl``) into ``$ORCH_OUTPUT_DIR/logs/``.
    """
    import keras

    global _FIT_COUNTER
    index = _FIT_COUNTER
    _FIT_COUNTER += 1
    run_env = os.environ.get("ORCH_RUN_DIR")
    run_dir = Path(run_env) if run_env else None
    ckpt_env = os.environ.get("ORCH_CHECKPOINT_DIR")
    ckpt_root = Path(ckpt_env) if ckpt_env else None
    result: list[Any] = []
    if checkpoint and ckpt_root is not None:
        backup = ckpt_root / f"fit-{index}"
        result.append(keras.callbacks.BackupAndRestore(backup_dir=str(backup)))
    elif checkpoint:
        result.append(
            keras.callbacks.BackupAndRestore(backup_dir=tempfile.mkdtemp(prefix="orch-ckpt-"))
        )
    out_env = os.environ.get("ORCH_OUTPUT_DIR")
    logs = None
    if out_env:
        from .curvelogs import LOGS, make_curve_logger, restore

        out = Path(out_env)
        restore(out, ckpt_root if checkpoint else None)
        result.append(make_curve_logger(out, index))
        logs = out / LOGS
    result.append(make_reporter(run_dir, ckpt_root if checkpoint else None, logs))
    return result


def output_dir(default: str = ".") -> Path:
    """Where to save models: ``$ORCH_OUTPUT_DIR`` under orch, else ``default``."""
    path = Path(os.environ.get("ORCH_OUTPUT_DIR") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path
