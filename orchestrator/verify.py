"""`orch pull --verify`: load each pulled model with TensorFlow and predict once.

Imports TensorFlow inside the functions: only this command pays for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import PullError

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
