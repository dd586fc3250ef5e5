"""Helpers shared by the benchmarks: timing commands side by side in one run."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).with_name("orch")
#: The installed console script when there is one (what users run), else -m.
ORCH = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "orchestrator"]


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The benchmarks' environment: no ORCH_* overrides, and bytecode caching on,
    as on a normal install (some shells here set PYTHONDONTWRITEBYTECODE, which
    would make orch recompile its modules on every run while typer's are cached)."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("ORCH_") and k != "PYTHONDONTWRITEBYTECODE"}
    e["PYTHONPATH"] = str(REPO)
    e["TF_CPP_MIN_LOG_LEVEL"] = "2"
    e.update(extra or {})
    return e


@contextlib.contextmanager
def temp_project(settings: str, files: dict[str, str]) -> Iterator[Path]:
    """A throw-away project folder with ``orch.toml`` = ``settings`` and ``files``."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "proj"
        root.mkdir()
        (root / "orch.toml").write_text(settings)
        for name, text in files.items():
            (root / name).write_text(text)
        yield root


def compile_package() -> None:
    """Write orch's .pyc files, as `pip install` does for a regular install."""
    import compileall

    compileall.compile_dir(str(REPO / "orchestrator"), quiet=1)


def timed(cmd: Sequence[str], cwd: Path, extra_env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env(extra_env), capture_output=True,
                          stdin=subprocess.DEVNULL)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                         f"{proc.stderr.decode()[-2000:]}")
    return took


def interleave(runs: int, **cases: Callable[[], float]) -> dict[str, list[float]]:
    """Run each case ``runs`` times, alternating, so load spikes hit all alike."""
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, case in cases.items():
            results[name].append(case())
    return results


def report(title: str, results: dict[str, list[float]], baseline: str, goal: float | None,
           lower_is_better: bool = True) -> float:
    base = statistics.median(results[baseline])
    print(f"\n{title}")
    worst = 0.0
    for name, values in results.items():
        med = statistics.median(values)
        ratio = med / base
        print(f"  {name:34s} median {med * 1000:8.1f} ms  ({len(values)} runs)  "
              f"ratio {ratio:5.2f}×")
        if name != baseline:
            worst = max(worst, ratio)
    if goal is not None:
        verdict = "meets" if worst <= goal else "MISSES"
        print(f"  → worst ratio {worst:.2f}× {verdict} the goal ≤ {goal:.2f}×")
    return worst
