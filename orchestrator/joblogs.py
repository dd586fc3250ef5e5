"""Job logs: reading a job's log from its hub, following it, and tails of text.

The worker writes ``runs/<job>/<n>/log.txt`` on the job's hub (see
:mod:`orchestrator.protocol`); this module only reads. Standard library plus the
hub code: the worker imports :func:`tail` from here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from . import protocol as P
from .errors import HubNotFound, UsageError

if TYPE_CHECKING:
    from .config import Project
    from .models import Job

LOG_TAIL_LINES = 20


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a text file ('' if absent)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return tail_text(text, lines)


def tail_text(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines; carriage-return progress bars are
    collapsed to their last state, and TensorFlow's start-up noise is left out
    (:mod:`orchestrator.tfnoise`)."""
    from .tfnoise import is_noise

    rows = [r.rsplit("\r", 1)[-1] for r in text[-64 * 1024:].split("\n")]
    return "\n".join([r for r in rows if r.strip() and not is_noise(r)][-lines:])


def read_log(project: Project, job: Job, attempt: int | None = None,
             offset: int = 0) -> str | None:
    """Attempt ``attempt`` (default: the current one) of ``job``'s log, from byte
    ``offset``; None when there is no log (yet)."""
    from .hubs import project_hub

    n = job.attempt if attempt is None else attempt
    if not 1 <= n <= job.attempt:
        raise UsageError(f"job {job.id} has attempts 1 to {job.attempt}")
    key = P.log(job.id, n)
    hub = project_hub(project, job.hub)
    path = hub.local_path(key)
    try:
        if path is not None:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        else:
            data = hub.get_bytes(key)[offset:]
    except (FileNotFoundError, HubNotFound):
        return None
    return data.decode("utf-8", "replace")


def follow(project: Project, job: Job, refresh: Callable[[Job], Job],
           keep_going: bool, interval: float = 0.5) -> Iterator[str]:
    """The current attempt's log as it grows: chunks of text, and a marker line when
    the job moves to a new attempt. Ends when ``keep_going`` is False or the job
    ended (``refresh`` reads the job again)."""
    from .models import TERMINAL

    offset, attempt = 0, job.attempt
    while True:
        if job.attempt != attempt:
            offset, attempt = 0, job.attempt
            yield f"--- attempt {attempt} ---\n"
        text = read_log(project, job, offset=offset)
        if text:
            offset += len(text.encode("utf-8"))
            yield text
        if not keep_going or job.state in TERMINAL:
            return
        time.sleep(interval)
        job = refresh(job)
