"""The store's records of workers and deliveries: what the daemon last saw of each
worker, and what pulls placed in the project. A mixin of :class:`~.store.Store`
(it uses the store's connection and transactions)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

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
        """Record a heartbeat. Returns ``(new, advanced)``: whether the worker is new,
        and whether its heartbeat counter moved (only then is ``last_seen`` bumped,
        so liveness is judged by the daemon's clock, not the worker's)."""
        wid = beat.worker_id
        row = self.db.execute("SELECT seq, gone FROM workers WHERE id=?", (wid,)).fetchone()
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
            "info": beat.to_json().decode(),
            "hub": hub,
            "session_left": caps.session_left,
        }
        with self.tx() as db:
            if row is None:
                db.execute(
                    f"INSERT INTO workers (id, {', '.join(values)}, last_seen) "
                    f"VALUES (?, {', '.join('?' * len(values))}, ?)",
                    [wid, *values.values(), seen_at],
                )
                return True, True
            advanced = beat.seq != row["seq"]
            if not advanced:
                return False, False
            # A worker declared gone that beats again may rejoin: its old assignments
            # were withdrawn when it was declared gone, so it cannot run them twice.
            revived = 0 if beat.state.value != "stopped" else row["gone"]
            db.execute(
                f"UPDATE workers SET {', '.join(f'{k}=?' for k in values)}, last_seen=?, "
                "gone=? WHERE id=?",
                [*values.values(), seen_at, revived, wid],
            )
            return False, True

    def workers(self, include_gone: bool = False) -> list[WorkerInfo]:
        sql = (
            "SELECT id, name, kind, host, pid, gpu, gpu_name, state, job_id, attempt, last_seen, "
            "gone, hub, session_left, info FROM workers"
        )
        if not include_gone:
            sql += " WHERE gone=0"
        rows = self.db.execute(sql + " ORDER BY name, id")
        out = []
        for r in rows:
            fields = {k: r[k] for k in r.keys() if k != "info"}  # noqa: SIM118 - a Row
            caps = json.loads(r["info"] or "{}").get("capabilities") or {}
            out.append(WorkerInfo(**{**fields, "gpu": bool(r["gpu"]), "gone": bool(r["gone"]),
                                     "heartbeat_interval": caps.get("heartbeat_interval")}))
        return out

    def mark_worker_gone(self, worker_id: str) -> None:
        with self.tx() as db:
            db.execute("UPDATE workers SET gone=1 WHERE id=?", (worker_id,))

    def refresh_worker_leases(self, now: float) -> None:
        """Give every live worker a fresh lease (the daemon calls this at start-up,
        so time it was down does not count against the workers)."""
        with self.tx() as db:
            db.execute("UPDATE workers SET last_seen=? WHERE gone=0", (now,))
