"""Being told when a job ends: one line per ended job for `orch top` and
`orch submit --wait`, and (setting ``notify``) the terminal bell and the
desktop's notifier.

A job has *ended* for a watcher when nothing more happens to it unless the user
acts: a terminal state, or a sealed result that will not be pulled (auto-pull
off, or the pull failed). Each attempt ends once: a retried job is announced again.
The desktop notifier is looked up on every call (``notify-send`` on Linux,
``osascript`` on macOS); when there is none, nothing happens and nothing fails.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import TextIO

from .logs import get_logger
from .models import TERMINAL, Job, JobState, format_duration

log = get_logger(__name__)
S = JobState


def has_ended(job: Job, auto_pull: bool) -> bool:
    """Whether ``job`` reached an end a watcher waits for (see the module's doc)."""
    return job.state in TERMINAL or (job.state is S.SUCCEEDED and (
        not auto_pull or job.pull_error is not None))


def ended_line(job: Job) -> str:
    """One line about a job that ended: ``ID NAME: STATE after 1m02s → where``."""
    took = ""
    if job.started_at is not None:
        took = f" after {format_duration((job.finished_at or time.time()) - job.started_at)}"
    tries = f" (try {job.attempt})" if job.attempt > 1 else ""
    detail = ""
    if job.state is S.PULLED and job.pulled_to:  # the model first, its curves' logs last
        detail = f" → {', '.join(sorted(job.pulled_to, key=lambda p: p.split('/')[-1] == 'logs'))}"
    elif job.state is S.SUCCEEDED and job.pull_error:
        detail = f" (not pulled: {job.pull_error})"
    elif job.state is S.FAILED:
        detail = f": {job.error}" if job.error else (
            f": exit code {job.exit_code}" if job.exit_code is not None else "")
    return f"{job.id} {job.name}: {job.state.value}{tries}{took}{detail}"


class EndWatch:
    """Which jobs ended since the last look. Jobs already ended when the watch
    starts (``before``) are not announced. Not thread-safe; cheap per call."""

    def __init__(self, auto_pull: bool, before: Iterable[Job] = ()) -> None:
        self.auto_pull = auto_pull
        self._told = {(j.id, j.attempt) for j in before if has_ended(j, auto_pull)}

    def ended(self, jobs: Iterable[Job]) -> list[Job]:
        """The jobs of ``jobs`` that ended and were not returned before."""
        new = [j for j in jobs if has_ended(j, self.auto_pull)
               and (j.id, j.attempt) not in self._told]
        self._told.update((j.id, j.attempt) for j in new)
        return new


class Notifier:
    """Rings the bell on ``terminal`` and calls the desktop's notifier for each
    ended job, when ``enabled`` (the ``notify`` setting); does nothing otherwise."""

    def __init__(self, enabled: bool, terminal: TextIO | None = None) -> None:
        self.enabled = enabled
        self.terminal = terminal if terminal is not None else sys.stderr

    def tell(self, job: Job) -> None:
        if not self.enabled:
            return
        try:
            self.terminal.write("\a")
            self.terminal.flush()
        except (OSError, ValueError):  # a closed or broken terminal: the line says it all
            pass
        desktop(f"orch: {job.name} {job.state.value}", ended_line(job))


def desktop_command(title: str, message: str) -> list[str] | None:
    """The command that shows ``title``/``message`` on this desktop, or None."""
    if sys.platform == "darwin":
        osascript = shutil.which("osascript")
        if osascript is None:
            return None

        def quoted(text: str) -> str:
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

        return [osascript, "-e", f"display notification {quoted(message)} "
                                 f"with title {quoted(title)}"]
    notify_send = shutil.which("notify-send")
    return None if notify_send is None else [notify_send, title, message]


def desktop(title: str, message: str) -> bool:
    """Show a desktop notification; whether a notifier was found and started. Not
    waited for (a notifier that hangs, e.g. with no D-Bus, never freezes `orch top`);
    never raises: a missing or broken notifier is only logged."""
    command = desktop_command(title, message)
    if command is None:
        return False
    try:
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("desktop notifier %s failed: %s", command[0], exc)
        return False
    return True
