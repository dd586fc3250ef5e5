"""The store's records of workers and deliveries: what the daemon last saw of each
worker, and what pulls placed in the project. A mixin of :class:`~.store.Store`
(it uses the store's connection and transactions)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from .estimates import Run
from .models import WorkerInfo

if TYPE_CHECKING:
    from .protocol import Heartbeat


class Records:
    """Workers and deliveries (see the module's docstring)."""

    db: sqlite3.Connection

    def tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError  # the Store's

    # ---- deliveries -------------------------------------------------------

    def deliveries(self) -> dict[str, str]:
        """Project paths (files or folders) that pulls placed, by the job that did."""
        return dict(self.db.execute("SELECT path, job_id FROM deliveries"))

    def record_deliveries(self, job_id: str, paths: Iterable[str]) -> None:
        """``paths`` (project-relative) were placed by ``job_id``'s pull."""
        now = time.time()
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO deliveries (path, job_id, at) VALUES (?,?,?)",
                           [(path, job_id, now) for path in paths])

    # ---- workers ----------------------------------------------------------

    def upsert_worker(self, beat: Heartbeat, seen_at: float,
                      hub: str = "local") -> tuple[bool, bool]:
        """Record one heartbeat: see :meth:`upsert_workers`."""
        return self.upsert_workers([(beat, None)], seen_at, hub)[0]

    def upsert_workers(self, beats: Sequence[tuple[Heartbeat, str | None]], seen_at: float,
                       hub: str = "local") -> list[tuple[bool, bool]]:
        """Record heartbeats of ``hub``'s workers, each with the JSON it was read
        from (None: encode it again), in one transaction. Returns ``(new, advanced)``
        per beat: whether the worker is new, and whether its heartbeat counter moved
        (only then is ``last_seen`` bumped, so liveness is judged by the daemon's
        clock, not the worker's)."""
        with self.tx() as db:
            return [self._upsert(db, beat, raw, seen_at, hub) for beat, raw in beats]

    @staticmethod
    def _upsert(db: sqlite3.Connection, beat: Heartbeat, raw: str | None, seen_at: float,
                hub: str) -> tuple[bool, bool]:
        wid = beat.worker_id
        row = db.execute("SELECT seq, gone FROM workers WHERE id=?", (wid,)).fetchone()
        if row is not None and beat.seq == row["seq"]:
            return False, False
        caps = beat.capabilities
        values = {
            "name": beat.name,
            "kind": caps.kind,
            "host": beat.host,
            "pid": beat.pid,
            "gpu": int(caps.gpu),
            "gpu_name": caps.gpu_name,
            "state": beat.state.value,
            "job_id": beat.job_id,
            "attempt": beat.attempt,
            "seq": beat.seq,
            "info": raw if raw is not None else beat.to_json().decode(),
            "hub": hub,
            "session_left": caps.session_left,
            "slots": max(1, caps.slots),
            "gpu_mem_mb": caps.gpu_mem_mb,
            "only_job": caps.only_job,
            "heartbeat_interval": caps.heartbeat_interval,
            "session_age": _session_age(beat),
            "account": caps.account,
            "last_seen": seen_at,
        }
        if row is None:
            db.execute(f"INSERT INTO workers (id, {', '.join(values)}) "
                       f"VALUES (?, {', '.join('?' * len(values))})", [wid, *values.values()])
            return True, True
        # A worker declared gone that beats again may rejoin: its old assignments
        # were withdrawn when it was declared gone, so it cannot run them twice.
        values["gone"] = 0 if beat.state.value != "stopped" else row["gone"]
        if row["gone"] and not values["gone"]:  # its session had not ended after all
            db.execute("DELETE FROM sessions WHERE worker_id=?", (wid,))
        db.execute(f"UPDATE workers SET {', '.join(f'{k}=?' for k in values)} WHERE id=?",
                   [*values.values(), wid])
        return False, True

    def workers(self, include_gone: bool = False) -> list[WorkerInfo]:
        sql = (
            "SELECT id, name, kind, host, pid, gpu, gpu_name, state, job_id, attempt, last_seen, "
            "gone, hub, session_left, heartbeat_interval, slots, gpu_mem_mb, only_job, "
            "session_age, account "
            "FROM workers"
        )
        if not include_gone:
            sql += " WHERE gone=0"
        return [WorkerInfo(**{**dict(zip(r.keys(), r)), "gpu": bool(r["gpu"]),
                              "gone": bool(r["gone"])})
                for r in self.db.execute(sql + " ORDER BY name, id")]

    def mark_worker_gone(self, worker_id: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE workers SET gone=1 WHERE id=?", (worker_id,))

    def refresh_worker_leases(self, now: float) -> None:
        """Give every live worker a fresh lease (the daemon calls this at start-up,
        so time it was down does not count against the workers)."""
        with self.tx() as db:
            db.execute("UPDATE workers SET last_seen=? WHERE gone=0", (now,))

    # ---- sessions (how long they last: placement learns from them) ----------------

    def record_session_end(self, worker: WorkerInfo) -> None:
        """``worker``'s session ended (its heartbeats stopped without a clean stop):
        keep how old it was at its last heartbeat, a lower bound of its length.
        Idempotent (one row per worker; a worker that beats again removes it)."""
        if worker.session_age is None:
            return
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO sessions (worker_id, account, seconds, at) "
                       "VALUES (?,?,?,?)", (worker.id, worker.account or "",
                                            max(0.0, worker.session_age), time.time()))

    def session_ends(self, limit: int = 1000) -> list[tuple[str, float]]:
        """``(account, seconds)`` of the newest ``limit`` sessions that ended."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT account, seconds FROM sessions ORDER BY at DESC LIMIT ?", (limit,))]

    # ---- runs (what placement learns from) ---------------------------------------

    def record_run(self, job_id: str, attempt: int, run: Run) -> None:
        """What one finished attempt took: its device, epochs and times."""
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO runs (job_id, attempt, workload, device, epochs, "
                       "epoch_seconds, seconds, gpu_mem_mb, at) VALUES (?,?,?,?,?,?,?,?,?)",
                       (job_id, attempt, run.workload, run.device, run.epochs,
                        run.epoch_seconds, run.seconds, run.gpu_mem_mb, time.time()))

    def runs(self, limit: int = 2000) -> list[Run]:
        """The newest ``limit`` recorded runs (placement learns from them)."""
        rows = self.db.execute("SELECT workload, device, epochs, epoch_seconds, seconds, "
                               "gpu_mem_mb FROM runs ORDER BY at DESC LIMIT ?", (limit,))
        return [Run(*row) for row in rows]

    def keep_placements(self, decisions: Sequence[tuple[str, str, str | None]]) -> None:
        """Keep queued jobs' latest placement decisions (``(job id, decision JSON,
        note for its history or None)``), for `orch explain`, in one transaction."""
        if not decisions:
            return
        now = time.time()
        with self.tx() as db:
            db.executemany("UPDATE jobs SET placement=? WHERE id=?",
                           [(doc, job_id) for job_id, doc, _ in decisions])
            db.executemany("INSERT INTO events (job_id, at, src, dst, message) "
                           "VALUES (?, ?, NULL, NULL, ?)",
                           [(job_id, now, note) for job_id, _, note in decisions if note])


def _session_age(beat: Heartbeat) -> float | None:
    """How old the worker's session was when it beat (both times by its clock): from
    its session's start, else (an older worker with a session) its own start."""
    caps = beat.capabilities
    began = caps.session_started or (beat.started if caps.session_left is not None else None)
    if not began or not beat.time:
        return None
    return max(0.0, beat.time - began)
