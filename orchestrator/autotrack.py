"""Run an unmodified training script with orch's callbacks added to every fit.

``python -m orchestrator.autotrack script.py [args…]`` (the worker uses this
for ``orch submit --auto-track`` or ``ORCH_AUTOTRACK=1``): patches
``keras.Model.fit`` so each call gets :func:`orchestrator.keras.callbacks`
unless the script already passes them, then runs the script as ``__main__``.
"""

from __future__ import annotations

import functools
import os
import runpy
import sys
from typing import Any


def install() -> None:
    """Patch ``keras.Model.fit`` (idempotent)."""
    import keras

    from . import keras as orch_keras

    fit = keras.Model.fit
    if getattr(fit, "_orch_tracked", False):
        return

    @functools.wraps(fit)
    def tracked_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        given = list(kwargs.get("callbacks") or [])
        if not any(type(cb).__name__ == "Reporter" for cb in given):
            kwargs["callbacks"] = given + orch_keras.callbacks()
        return fit(self, *args, **kwargs)

    tracked_fit._orch_tracked = True  # type: ignore[attr-defined]
    keras.Model.fit = tracked_fit


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m orchestrator.autotrack SCRIPT [ARGS…]")
    install()
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
