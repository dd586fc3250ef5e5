"""What comes back from a run: the outputs a worker seals into a job's result.

Only files the run created or changed come back: the working folder's files are
recorded (size, modification time) when the run starts, and a file that came in
with the snapshot and was left as it was is never taken for the run's output.
Symlinks are not followed, so a run cannot pack a file from outside its folders.
Standard library only (the worker runs it in Colab).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .archive import regular_files
from .curvelogs import LOGS
from .models import OutputSpec

#: Files a script saves in its working folder that come back without --output.
MODEL_SUFFIXES = (".h5", ".hdf5", ".keras", ".tflite")
#: Folders of files that do not come back (made by Python itself, or notebooks).
NOT_OUTPUTS = ("__pycache__", ".ipynb_checkpoints")


def is_model_file(rel: str) -> bool:
    """A model or checkpoint a script saved by name: ``.h5``/``.keras``/``.tflite``
    files and TF checkpoints (``*.ckpt*`` and their ``checkpoint`` index)."""
    name = rel.rpartition("/")[2].lower()
    return name.endswith(MODEL_SUFFIXES) or ".ckpt" in name or name == "checkpoint"


def models_made(changed: Sequence[str]) -> list[str]:
    """Of the files a run made, its models: model files, and every file of a
    SavedModel folder (one holding a ``saved_model.pb`` the run wrote)."""
    saved = [rel[: -len("saved_model.pb")] for rel in changed
             if rel.endswith("/saved_model.pb") or rel == "saved_model.pb"]
    return [rel for rel in changed if is_model_file(rel) or rel == "saved_model.pb"
            or any(s and rel.startswith(s) for s in saved)]


def stats_of(root: Path) -> dict[str, tuple[int, int]]:
    """``{name: (size, mtime_ns)}`` of the regular files under ``root``."""
    out = {}
    for name, path in regular_files(root):
        st = path.stat()
        out[name] = (st.st_size, st.st_mtime_ns)
    return out


def made(src: Path, baseline: dict[str, tuple[int, int]]) -> list[str]:
    """Files under ``src`` that are new or changed since ``baseline`` (regular files
    only, Python's caches left out)."""
    now = stats_of(src)
    return sorted(name for name, st in now.items() if baseline.get(name) != st
                  and not any(part in NOT_OUTPUTS for part in name.split("/")))


def collect(outputs: Sequence[OutputSpec], out: Path, src: Path,
            baseline: dict[str, tuple[int, int]]) -> list[tuple[str, Path]]:
    """What comes back, as ``(archive name, path)``: folder ``i/`` holds output i.

    Without ``--output``: everything in ``$ORCH_OUTPUT_DIR`` (``out``), plus the model
    files the script saved in its working folder (``src``). With ``--output SRC``:
    SRC from ``out``, else from ``src`` if this run made or changed it; the run's
    learning-curve logs (``out/logs/``, see :mod:`.curvelogs`) come back too, as one
    more output (folder ``len(outputs)``, pulled to models/NAME/ like a default one).
    FileNotFoundError says which output is missing."""
    changed = made(src, baseline)
    if not outputs:
        files = {f"0/{n}": p for n, p in regular_files(out)}
        for rel in models_made(changed):
            files.setdefault(f"0/{rel}", src / rel)
        return sorted(files.items())
    found: list[tuple[str, Path]] = []
    for i, spec in enumerate(outputs):
        if spec.src == ".":
            found += [(f"{i}/{n}", p) for n, p in regular_files(out)]
            continue
        in_out = out / spec.src
        if in_out.is_dir():
            found += [(f"{i}/{in_out.name}/{n}", p) for n, p in regular_files(in_out)]
            continue
        if in_out.is_file() and not in_out.is_symlink():
            found.append((f"{i}/{in_out.name}", in_out))
            continue
        name = spec.src.strip("/")
        ours = [rel for rel in changed if rel == name or rel.startswith(name + "/")]
        if not ours:
            if (src / name).exists():
                raise FileNotFoundError(
                    f"output {name} was not made by this run: the copy in the working dir "
                    "came with the snapshot, unchanged (the project's file is left as it is)")
            raise FileNotFoundError(f"output {name} was not produced (looked in "
                                    "$ORCH_OUTPUT_DIR and the working dir)")
        base = name.rpartition("/")[2]
        for rel in ours:
            inner = rel[len(name):].lstrip("/")
            found.append((f"{i}/{base}/{inner}" if inner else f"{i}/{base}", src / rel))
    logs = out / LOGS
    if logs.is_dir() and not any(spec.src in (".", LOGS) for spec in outputs):
        found += [(f"{len(outputs)}/{LOGS}/{n}", p) for n, p in regular_files(logs)]
    return found


def only_logs(files: Sequence[tuple[str, Path]]) -> bool:
    """Whether what :func:`collect` found is nothing but learning-curve logs (or
    nothing): a run that saved no model."""
    return all(name.split("/")[1] == LOGS for name, _ in files)
