"""Intents on existing jobs: cancel and retry. The CLI records them; the daemon
carries out what needs a worker (a cancel marker on the hub)."""

from __future__ import annotations

import time

from .errors import IllegalTransitionError, UsageError
from .models import ON_WORKER, Job, JobState
from .store import Store

S = JobState


def cancel(store: Store, job: Job) -> str:
    """Cancel ``job``. QUEUED jobs end at once; running ones get a cancel marker
    from the daemon and end when their worker has stopped them."""
    if job.state in (S.QUEUED, S.LOST):
        store.update(job.id, cancel_requested=1)
        try:
            store.transition(job.id, S.CANCELLED, "cancelled by user", expect=[S.QUEUED],
                             finished_at=time.time())
            return "cancelled"
        except IllegalTransitionError:
            job = store.get(job.id)  # assigned meanwhile: fall through to a request
    if job.state in ON_WORKER:
        store.update(job.id, cancel_requested=1)
        store.note(job.id, "cancel requested by user")
        return "cancelling"
    raise UsageError(f"job {job.id} ({job.name}) is {job.state.value}; nothing to cancel")


def retry(store: Store, job: Job) -> Job:
    """Queue a FAILED or CANCELLED job again as a new attempt."""
    if job.state not in (S.FAILED, S.CANCELLED):
        raise UsageError(
            f"job {job.id} ({job.name}) is {job.state.value}; only FAILED or CANCELLED jobs "
            "can be retried"
        )
    return store.transition(
        job.id, S.QUEUED, f"retried by user as attempt {job.attempt + 1}",
        expect=[job.state], on_attempt=job.attempt, attempt=job.attempt + 1, cancel_requested=0,
        worker_id=None, exit_code=None, error=None, finished_at=None, progress={},
    )
