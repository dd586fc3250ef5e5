"""Local worker slots: one per GPU that ``nvidia-smi`` lists, plus CPU slots.

Used by the daemon (which keeps a worker alive per slot) and by `orch submit`
(which warns when no slot could ever take a job). ``nvidia-smi`` runs only when
asked for the GPUs.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from .config import Project


@dataclass(frozen=True)
class Slot:
    """One local worker the daemon keeps alive: a GPU, or a CPU slot."""

    name: str
    gpu: str | None = None
    gpu_name: str | None = None


def detect_gpus() -> list[tuple[str, str]]:
    """``[(index, name)]`` from ``nvidia-smi -L``; empty without NVIDIA GPUs."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in out.stdout.splitlines():
        if line.startswith("GPU ") and ":" in line:
            index = line[4:].split(":", 1)[0].strip()
            name = line.split(":", 1)[1].split("(UUID")[0].strip()
            gpus.append((index, name))
    return gpus


def local_slots(project: Project) -> list[Slot]:
    setting = project.settings.gpus.strip().lower()
    if setting == "none":
        gpus: list[tuple[str, str]] = []
    elif setting == "auto":
        gpus = detect_gpus()
    else:
        gpus = [(i.strip(), f"GPU {i.strip()}") for i in setting.split(",") if i.strip()]
    slots = [Slot(f"local-gpu{i}", gpu=i, gpu_name=name) for i, name in gpus]
    cpus = project.settings.local_slots
    if cpus is None:
        cpus = 0 if gpus else 1
    slots += [Slot(f"local-cpu{i}") for i in range(cpus)]
    return slots
