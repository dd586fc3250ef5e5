"""The learning-curve logs a run writes: TensorBoard event files and ``history.jsonl``.

Written by the job's own process (orch's Keras callbacks, so ``--auto-track`` too)
into ``$ORCH_OUTPUT_DIR/logs/``; they come back with the job's outputs and are
pulled beside the model, as ``models/NAME/logs/``. The first ``fit`` of a script
writes ``logs/`` itself, a later one ``logs/fit-K/``:

- ``train/`` and ``validation/``: TensorBoard event files (``keras.callbacks.TensorBoard``,
  epoch scalars). Without a usable summary writer (no ``tensorflow.summary``, a
  writer that fails) one warning line goes to the job's log and training goes on.
- ``history.jsonl``: one JSON line per epoch, ``{"fit", "epoch", "time", <metric>:
  <float>…}``, appended at each epoch end (so orch reads curves without TensorFlow).

A resumed attempt keeps the earlier epochs: ``logs/`` travels inside the checkpoint
archive (``orchestrator.keras`` packs it as ``logs/``), is put back in the output dir
before training restarts, and the history lines of epochs the run will train again
are dropped. Outside orch (no ``$ORCH_OUTPUT_DIR``) nothing is written. Keras is
imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

LOGS = "logs"
HISTORY = "history.jsonl"

_restored = False


def fit_dir(out_dir: Path, fit: int) -> Path:
    """Where fit number ``fit`` of a run writes its logs."""
    return out_dir / LOGS if fit == 0 else out_dir / LOGS / f"fit-{fit}"


def restore(out_dir: Path, ckpt_root: Path | None) -> None:
    """Put the logs an earlier attempt packed with its checkpoint back into the output
    dir (once per process, before the first fit; never over logs already there)."""
    global _restored
    if _restored:
        return
    _restored = True
    saved = ckpt_root / LOGS if ckpt_root is not None else None
    target = out_dir / LOGS
    if saved is not None and saved.is_dir() and not target.exists():
        shutil.copytree(saved, target)


def _warn(what: str) -> None:
    print(f"orch: TensorBoard logs are off for this run ({what}); training goes on",
          file=sys.stderr, flush=True)


def _tensorboard(log_dir: Path) -> Any:
    """Keras's TensorBoard callback for ``log_dir``, or None (one warning line) when
    no summary writer can be had."""
    import keras

    try:
        import tensorflow.summary  # noqa: F401 - what Keras's TensorBoard writes with
    except Exception as exc:  # noqa: BLE001 - any failure means: no writer
        _warn(f"no TensorBoard writer: {type(exc).__name__}: {exc}")
        return None
    return keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False,
                                       update_freq="epoch", profile_batch=0)


def make_curve_logger(out_dir: Path, fit: int) -> Any:
    """The callback that writes fit ``fit``'s logs (a ``keras.callbacks.Callback``)."""
    import keras

    log_dir = fit_dir(out_dir, fit)
    log_dir.mkdir(parents=True, exist_ok=True)

    class CurveLog(keras.callbacks.Callback):  # type: ignore[misc]
        """Writes history.jsonl itself and hands every event to TensorBoard's
        callback; the first error from that one turns it off (one warning line)."""

        def __init__(self) -> None:
            super().__init__()
            self.history = log_dir / HISTORY
            self.board = _tensorboard(log_dir)

        def _board(self, hook: str, *args: Any) -> None:
            if self.board is None:
                return
            try:
                getattr(self.board, hook)(*args)
            except Exception as exc:  # noqa: BLE001 - logs must never stop training
                self.board = None
                _warn(f"the writer failed: {type(exc).__name__}: {exc}".splitlines()[0])

        def set_model(self, model: Any) -> None:
            super().set_model(model)
            self._board("set_model", model)

        def set_params(self, params: dict[str, Any]) -> None:
            super().set_params(params)
            self._board("set_params", params)

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            # BackupAndRestore (earlier in the list) has set the epoch training resumes
            # at: the lines of the epochs to be trained again go
            start = getattr(self.model, "_initial_epoch", None) or 0
            keep_history(self.history, fit, start)
            self._board("on_train_begin", logs)

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            self._board("on_train_end", logs)

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self._board("on_epoch_begin", epoch, logs)

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            from .keras import finite_floats

            row = {"fit": fit, "epoch": epoch, "time": round(time.time(), 3),
                   **finite_floats(logs)}
            with open(self.history, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            self._board("on_epoch_end", epoch, logs)
            self.flush()

        def flush(self) -> None:
            """Flush the event files, so a checkpoint packed now holds whole records."""
            for writer in list(getattr(self.board, "_writers", {}).values()):
                self._flush(writer)

        def _flush(self, writer: Any) -> None:
            try:
                writer.flush()
            except Exception:  # noqa: BLE001 - flushed at train end anyway
                pass

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self._board("on_train_batch_begin", batch, logs)

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self._board("on_train_batch_end", batch, logs)

        def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
            self._board("on_test_begin", logs)

        def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
            self._board("on_test_end", logs)

        def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self._board("on_test_batch_begin", batch, logs)

        def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self._board("on_test_batch_end", batch, logs)

    return CurveLog()


def keep_history(path: Path, fit: int, start: int) -> None:
    """Drop the lines of ``fit`` from epoch ``start`` on (a resumed run trains them
    again); written via a rename, so the file is never half there. No-op when nothing
    is dropped."""
    from .atomic import write_atomic

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a line cut short when the earlier attempt was killed
        if not (isinstance(row, dict) and row.get("fit", 0) == fit
                and isinstance(row.get("epoch"), int) and row["epoch"] >= start):
            kept.append(line)
    if kept != lines:
        write_atomic(path, "".join(f"{line}\n" for line in kept).encode())
