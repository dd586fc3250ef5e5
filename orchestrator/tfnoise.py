"""TensorFlow's start-up noise, kept out of what orch itself prints.

TensorFlow's C++ side logs to the process's stderr as it loads (CPU features,
oneDNN, CUDA plugins registered twice, a failed ``cuInit`` on a machine with no
GPU), and absl announces that it logs before being initialised. None of it is
about the user's job. So:

- orch's own commands that import TensorFlow (`orch pull --verify`) call
  :func:`quiet_tensorflow` first: ``TF_CPP_MIN_LOG_LEVEL=3`` unless the user set it
  (their choice wins), and Python absl's warnings off;
- the short log tails orch shows (`orch status JOB`, a failed run's error) drop the
  known noise lines (:func:`drop_noise`). The job's log itself (`orch logs`) is the
  script's output, untouched.

Standard library only: the worker uses it (through :mod:`orchestrator.joblogs`).
"""

from __future__ import annotations

import logging
import os
import re

#: Lines TensorFlow, XLA and absl print while loading, whatever the script does.
NOISE = re.compile("|".join((
    r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\]",  # C++ glog/absl lines
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] [\w./-]+\.cc:\d+\]",  # older TF
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"^oneDNN custom operations are on",
    r"^WARNING:absl:",
)))


def quiet_tensorflow() -> None:
    """Before importing TensorFlow in orch's own process: keep its C++ start-up
    logging off unless the user set ``TF_CPP_MIN_LOG_LEVEL``, and Python absl's
    warnings too. Idempotent."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("absl").setLevel(logging.ERROR)


def is_noise(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's start-up messages."""
    return NOISE.match(line.lstrip()) is not None


def drop_noise(text: str) -> str:
    """``text`` without TensorFlow's start-up lines (other lines kept, in order)."""
    if not text:
        return text
    return "\n".join(line for line in text.split("\n") if not is_noise(line))
