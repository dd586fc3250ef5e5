"""The moves of a job's life, each one store transaction (a mixin of
:class:`~.store.Store`: it uses the store's connection, its ``tx`` and its
compare-and-set ``_move``).

The scheduler does hub I/O only after one of these committed; what a crash or a hub
error leaves undone there (an inbox file not written or not withdrawn) is repaired
on the next tick (``Scheduler.repair``). No job is ever left half-moved.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

from .errors import IllegalTransitionError, UsageError
from .models import ON_WORKER, RETRYABLE, Job, JobState


class JobMoves:
    """assign, start, finish, lose (and re-queue), cancel, retry."""

    db: sqlite3.Connection

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # the Store's

    def get(self, job_id: str) -> Job:
        raise NotImplementedError  # the Store's

    def jobs(self, states: Iterable[JobState] | None = None, limit: int | None = None,
             newest_first: bool = False) -> list[Job]:
        raise NotImplementedError  # the Store's

    def _move(self, db: sqlite3.Connection, job_id: str, dst: JobState, message: str,
              expect: Iterable[JobState] | None, on_attempt: int | None,
              fields: dict[str, Any], now: float) -> JobState:
        raise NotImplementedError  # the Store's

    def assign(self, job_id: str, attempt: int, worker_id: str, hub: str) -> Job:
        """QUEUED → ASSIGNED to ``worker_id`` (on ``hub``), with the attempt's row."""
        now = time.time()
        with self.tx() as db:
            self._move(db, job_id, JobState.ASSIGNED, f"assigned to {worker_id} (attempt "
                       f"{attempt})", [JobState.QUEUED], attempt,
                       {"worker_id": worker_id, "hub": hub}, now)
            db.execute("INSERT OR REPLACE INTO attempts (job_id, n, worker_id, assigned_at) "
                       "VALUES (?,?,?,?)", (job_id, attempt, worker_id, now))
        return self.get(job_id)

    def start(self, job_id: str, attempt: int, started_at: float, message: str) -> Job:
        """ASSIGNED → RUNNING: the worker reported the attempt started."""
        with self.tx() as db:
            self._move(db, job_id, JobState.RUNNING, message, [JobState.ASSIGNED], attempt,
                       {"started_at": started_at}, time.time())
            db.execute("UPDATE attempts SET started_at=? WHERE job_id=? AND n=?",
                       (started_at, job_id, attempt))
        return self.get(job_id)

    def finish(self, job_id: str, attempt: int, dst: JobState, message: str,
               **fields: Any) -> Job:
        """ASSIGNED/RUNNING → ``dst`` (SUCCEEDED, FAILED, CANCELLED), ending the attempt."""
        now = time.time()
        with self.tx() as db:
            self._move(db, job_id, dst, message, ON_WORKER, attempt,
                       {"finished_at": now, **fields}, now)
            db.execute("UPDATE attempts SET ended_at=?, outcome=? WHERE job_id=? AND n=?",
                       (now, dst.value, job_id, attempt))
        return self.get(job_id)

    def lose(self, job_id: str, attempt: int, reason: str, session_end: bool = False,
             limit: int = 0) -> Job:
        """The lease of ``attempt`` expired: LOST, then QUEUED as attempt+1 (it resumes
        from its checkpoint), or CANCELLED if a cancel was asked meanwhile. A loss to a
        session's end (``session_end``) is counted: at the ``limit``-th (0: no limit)
        the job FAILS with that reason instead of looping."""
        now = time.time()
        with self.tx() as db:
            row = db.execute("SELECT worker_id, cancel_requested, checkpoints, session_losses "
                             "FROM jobs WHERE id=?", (job_id,)).fetchone()
            worker = row["worker_id"] if row else None
            losses = row["session_losses"] + 1 if row and session_end else 0
            if session_end and limit and losses >= limit and not row["cancel_requested"]:
                why = (f"lost to {losses} Colab session ends; "
                       + ("it needs longer sessions" if row["checkpoints"] else
                          "it does not checkpoint or needs longer sessions")
                       + f": the last on {worker}: {reason}")
                self._move(db, job_id, JobState.FAILED, why, ON_WORKER, attempt,
                           {"finished_at": now, "error": why, "session_losses": losses}, now)
                db.execute("UPDATE attempts SET ended_at=?, outcome='LOST' WHERE job_id=? "
                           "AND n=?", (now, job_id, attempt))
                return self.get(job_id)
            self._move(db, job_id, JobState.LOST, f"lost on {worker}: {reason}", ON_WORKER,
                       attempt, {"session_losses": losses} if session_end else {}, now)
            db.execute("UPDATE attempts SET ended_at=?, outcome='LOST' WHERE job_id=? AND n=?",
                       (now, job_id, attempt))
            self._requeue(db, job_id, attempt, now)
            if row["cancel_requested"]:
                self._move(db, job_id, JobState.CANCELLED, "cancelled", [JobState.QUEUED],
                           attempt + 1, {"finished_at": now}, now)
        return self.get(job_id)

    def _requeue(self, db: sqlite3.Connection, job_id: str, attempt: int, now: float) -> None:
        self._move(db, job_id, JobState.QUEUED, f"re-queued as attempt {attempt + 1} "
                   "(resumes from its checkpoint)", [JobState.LOST], attempt,
                   {"worker_id": None, "attempt": attempt + 1, "progress": {}}, now)

    def requeue_lost(self) -> list[str]:
        """Re-queue jobs left LOST by an older orch (which lost in several steps)."""
        done = []
        for job in self.jobs([JobState.LOST]):
            with self.tx() as db:
                try:
                    self._requeue(db, job.id, job.attempt, time.time())
                except IllegalTransitionError:
                    continue
            done.append(job.id)
        return done

    def cancel(self, job_id: str) -> str:
        """The user cancels: a queued job ends at once ("cancelled"); one on a worker
        gets a cancel request the daemon passes on ("cancelling"). UsageError for a
        job that has ended."""
        now = time.time()
        with self.tx() as db:
            state = JobState(db.execute("SELECT state FROM jobs WHERE id=?",
                                        (job_id,)).fetchone()["state"])
            if state is JobState.QUEUED:
                self._move(db, job_id, JobState.CANCELLED, "cancelled by user",
                           [JobState.QUEUED], None, {"cancel_requested": 1, "finished_at": now},
                           now)
                return "cancelled"
            if state in ON_WORKER or state is JobState.LOST:
                db.execute("UPDATE jobs SET cancel_requested=1, updated_at=? WHERE id=?",
                           (now, job_id))
                db.execute("INSERT INTO events (job_id, at, src, dst, message) "
                           "VALUES (?,?,?,?,?)", (job_id, now, None, None,
                                                  "cancel requested by user"))
                return "cancelling"
        raise UsageError(f"job {job_id} is {state.value}; nothing to cancel")

    def retry(self, job_id: str, fresh: bool = False) -> Job:
        """Queue a job that ended (or whose result waits to be pulled) again, as a new
        attempt of the same snapshot. It resumes from its newest checkpoint, unless
        ``fresh``: then checkpoints of earlier attempts are ignored."""
        job = self.get(job_id)
        if job.state not in RETRYABLE:
            raise UsageError(f"job {job.id} ({job.name}) is {job.state.value}: only a job "
                             "that has ended can be retried (cancel it first)")
        n = job.attempt + 1
        how = "from scratch" if fresh else "resuming from its newest checkpoint"
        with self.tx() as db:
            self._move(db, job.id, JobState.QUEUED, f"retried by user as attempt {n} ({how})",
                       [job.state], job.attempt,
                       {"attempt": n, "cancel_requested": 0, "worker_id": None,
                        "exit_code": None, "error": None, "finished_at": None, "progress": {},
                        "pull_error": None, "session_losses": 0,
                        **({"fresh_from": n} if fresh else {})},
                       time.time())
        return self.get(job.id)
