"""`orch pull --verify`: load each pulled model with TensorFlow and predict once.

Imports TensorFlow inside the functions: only this command pays for it. Which models
passed is kept in ``.orch/verified.json`` (written only by `orch pull --verify`,
atomically): each model's path with the size and modification time it had, so
`orch pull --verify` with no job names verifies every pulled model not verified yet
(a model pulled again is verified again).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PullError
from .models import JobState

if TYPE_CHECKING:
    from .config import Project
    from .models import Job
    from .store import Store

log = logging.getLogger(__name__)
MODEL_SUFFIXES = (".keras", ".h5")


def find_models(paths: Iterable[Path]) -> list[Path]:
    """Model files (.keras, .h5) and SavedModel folders at or under ``paths``."""
    found: list[Path] = []
    for path in paths:
        if path.is_file() and path.suffix in MODEL_SUFFIXES:
            found.append(path)
        elif path.is_dir():
            if (path / "saved_model.pb").is_file():
                found.append(path)
                continue
            found += find_models(sorted(path.iterdir()))
    return found


def _dummy(shape: Any, dtype: Any) -> Any:
    import numpy as np

    dims = [1 if d is None else int(d) for d in shape]
    name = getattr(dtype, "name", str(dtype))
    if "string" in name:
        return np.full(dims, "orch verify", dtype=object)
    return np.zeros(dims, dtype=name)


def verify_model(path: Path) -> str:
    """Load ``path`` and run one prediction on zeros; a one-line description."""
    from .tfnoise import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow as tf

    try:
        if path.is_dir():
            loaded = tf.saved_model.load(str(path))
            fn = loaded.signatures.get("serving_default") or next(iter(loaded.signatures.values()))
            specs = fn.structured_input_signature[1]
            inputs = {k: tf.constant(_dummy(s.shape, s.dtype)) for k, s in specs.items()}
            out = fn(**inputs)
            shapes = {k: tuple(v.shape) for k, v in out.items()}
            return f"{path} (SavedModel) → {shapes}"
        import keras

        model = keras.models.load_model(path, compile=False)
        # string inputs (a TextVectorization front) must be tensors: Keras refuses
        # NumPy object arrays
        tensors = [tf.constant(_dummy(t.shape, t.dtype)) for t in model.inputs]
        out = model.predict(tensors[0] if len(tensors) == 1 else tensors, verbose=0)
        shape = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
        return f"{path} ({type(model).__name__}) → {shape}"
    except Exception as exc:
        raise PullError(f"model {path} failed to load or predict: {exc}".splitlines()[0]) from exc


def verify_paths(paths: Iterable[Path]) -> list[str]:
    models = find_models(paths)
    if not models:
        raise PullError("no model (.keras, .h5 or SavedModel) among the pulled outputs")
    return [verify_model(m) for m in models]


VERIFIED_FILE = "verified.json"


def _stamp(model: Path) -> str:
    """What identifies this version of a model: size and mtime of its file (of
    ``saved_model.pb`` for a SavedModel folder)."""
    st = (model / "saved_model.pb" if model.is_dir() else model).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


class VerifiedModels:
    """The models `orch pull --verify` found sound, as they were then."""

    def __init__(self, project: Project) -> None:
        self.path = project.state_dir / VERIFIED_FILE
        try:
            loaded = json.loads(self.path.read_text())
        except (OSError, ValueError):
            loaded = {}  # none yet, or damaged: everything is verified again
        self.stamps: dict[str, str] = loaded if isinstance(loaded, dict) else {}

    def has(self, model: Path) -> bool:
        try:
            return self.stamps.get(str(model.resolve())) == _stamp(model)
        except OSError:
            return False

    def add(self, model: Path) -> None:
        """Record ``model`` as verified (written at once, atomically)."""
        from .atomic import write_atomic

        self.stamps[str(model.resolve())] = _stamp(model)
        write_atomic(self.path, json.dumps(self.stamps, indent=1, sort_keys=True))


def unverified(project: Project, store: Store) -> tuple[list[tuple[Job, Path]], int]:
    """The models of every pulled job that are still in place and not verified yet,
    oldest job first, and how many models are in place in all."""
    seen = VerifiedModels(project)
    todo: list[tuple[Job, Path]] = []
    total = 0
    for job in sorted(store.jobs([JobState.PULLED]), key=lambda j: j.seq):
        paths = [project.root / p for p in job.pulled_to]
        models = find_models([p for p in paths if p.exists()])
        total += len(models)
        todo += [(job, m) for m in models if not seen.has(m)]
    return todo, total


def verify_and_record(project: Project, models: Iterable[Path]
                      ) -> Iterator[str | PullError]:
    """Verify each model in turn, recording those that pass: a description for each,
    or the PullError of one that failed (which does not stop the others)."""
    seen = VerifiedModels(project)
    for model in models:
        try:
            line = verify_model(model)
        except PullError as exc:
            yield exc
            continue
        seen.add(model)
        yield line
