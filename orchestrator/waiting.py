"""Waiting for jobs to end (`orch submit --wait`): what counts as the end, and
keeping a daemon alive meanwhile. The CLI draws the progress; this module decides.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from .config import Project
from .models import Job, JobState
from .notify import has_ended
from .store import Store

S = JobState
KEEPALIVE = 5.0  # seconds between checks that a daemon runs


class JobWatch:
    """The jobs ``ids`` of ``project``, read again on every :meth:`read`."""

    def __init__(self, project: Project, store: Store, ids: Sequence[str]) -> None:
        self.project = project
        self.store = store
        self.ids = list(ids)
        self.auto_pull = project.settings.auto_pull
        self._checked = time.monotonic()

    def read(self) -> list[Job]:
        if time.monotonic() - self._checked > KEEPALIVE:  # keep a daemon alive while we wait
            from .lifecycle import start_background

            self._checked = time.monotonic()
            start_background(self.project)
        return [self.store.get(i) for i in self.ids]

    def finished(self, job: Job) -> bool:
        """Whether ``job`` has reached an end a waiter waits for: a terminal state, or
        a sealed result that will not be pulled (auto-pull off, or the pull failed)."""
        return has_ended(job, self.auto_pull)

    def failures(self, jobs: Sequence[Job]) -> list[str]:
        """One line per job that did not end as hoped (empty: all succeeded)."""
        ok = S.PULLED if self.auto_pull else S.SUCCEEDED
        lines = []
        for j in jobs:
            if j.state is S.SUCCEEDED and j.pull_error:
                lines.append(f"job {j.id} ({j.name}) succeeded but its result was not pulled: "
                             f"{j.pull_error}")
            elif j.state is not ok:
                lines.append(f"job {j.id} ({j.name}) {j.state.value}: {j.error or ''}"
                             .rstrip(": "))
        return lines
