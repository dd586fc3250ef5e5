"""What `orch config` shows: each setting's effective value, as a person reads it
(durations as ``5m``, ``auto`` with what it found, ``(none)`` for nothing), and
where it came from (:func:`orchestrator.config.setting_origins`). Reads only;
runs ``nvidia-smi`` once when ``gpus`` is ``auto``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

from .config import DURATIONS, Project, setting_origins


@dataclass(frozen=True)
class SettingRow:
    """One setting: its machine value, how it reads, and its source."""

    name: str
    value: Any
    shown: str
    source: str


def duration(seconds: float) -> str:
    """``300`` → ``5m``, ``90`` → ``1m30s``, ``0.2`` → ``0.2s``: what a config file
    would say (parse_duration reads it back)."""
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    left, parts = round(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"


def _gpus(setting: str) -> tuple[str, int]:
    """How ``gpus`` reads, and how many GPUs it gives the local place."""
    from .places.local import detect_gpus

    text = setting.strip().lower()
    if text == "none":
        return "none", 0
    if text != "auto":
        return setting, len([g for g in setting.split(",") if g.strip()])
    found = detect_gpus()
    names = ", ".join(f"{i}: {name}" for i, name, _ in found)
    return f"auto (detected: {names or 'none'})", len(found)


def _shown(project: Project, name: str, value: Any, gpus: int) -> str:
    if name == "local_slots" and value is None:
        return f"auto: {0 if gpus else 1} ({'GPUs found' if gpus else 'no GPU found'})"
    if name == "gpu_jobs" and value is None:
        from .places.local import DEFAULT_GPU_JOBS

        return str(DEFAULT_GPU_JOBS)
    if name == "colab_workers" and value is None:
        return "(none)"
    if name == "hub":
        return f"{value} ({project.remote_hub_url})" if value.strip() in ("drive", "drive:") \
            else value or "(none)"
    if name == "drive_credentials" and not value:
        return os.path.relpath(project.drive_credentials, project.root)
    if isinstance(value, bool):
        return "true" if value else "false"
    if name in DURATIONS:
        return duration(value)
    if name == "upload_rate":
        return f"{value / 1e6:g} MB/s"
    if name.endswith("_mb"):
        return f"{value:g} MB"
    if isinstance(value, float):
        return f"{value:g}"
    return "(none)" if value in ("", None) else str(value)


def setting_rows(project: Project, environ: dict[str, str] | None = None) -> list[SettingRow]:
    """Every setting of ``project``, in declaration order."""
    origins = setting_origins(project.root, environ)
    gpus_shown, gpus = _gpus(project.settings.gpus)
    rows = []
    for f in dataclasses.fields(project.settings):
        value = getattr(project.settings, f.name)
        shown = gpus_shown if f.name == "gpus" else _shown(project, f.name, value, gpus)
        rows.append(SettingRow(f.name, value, shown, origins[f.name]))
    return rows


def render_text(project: Project, rows: list[SettingRow]) -> str:
    """Aligned columns: setting, value, source."""
    width = max(len(r.name) for r in rows)
    shown = max(len(r.shown) for r in rows)
    lines = [f"project  {project.root}", "",
             f"{'setting':{width}}  {'value':{shown}}  from"]
    lines += [f"{r.name:{width}}  {r.shown:{shown}}  {r.source}" for r in rows]
    return "\n".join(lines)


def render_json(project: Project, rows: list[SettingRow]) -> str:
    """Machine values (None for auto, seconds for durations) with their source."""
    return json.dumps({"project": str(project.root), "settings": {
        r.name: {"value": r.value, "source": r.source} for r in rows}}, indent=2)
