"""SQLite state of one project (``.orch/state.db``, WAL mode).

Both the CLI and the daemon open it; SQLite's locking serialises writers. Every
state change goes through :meth:`Store.transition`, a compare-and-set
(``UPDATE … WHERE id=? AND state IN (…)``) that appends an event in the same
transaction, so a lost race is detected and nothing is half-applied.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import IllegalTransitionError, JobNotFoundError, StoreError
from .logs import get_logger
from .models import (
    Attempt,
    Event,
    Job,
    JobSpec,
    JobState,
    WorkerInfo,
    check_transition,
    sources_for,
)
from .schema import JOB_COLUMNS, MIGRATIONS, SCHEMA_VERSION, job_of

if TYPE_CHECKING:
    from .protocol import Heartbeat

log = get_logger(__name__)

class Store:
    """One connection to a project's state database. Not shared across threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a usable orch state database: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): all or nothing."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} is schema v{version}, newer than this orch (v{SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION:
            return
        if version == 0:
            self.db.execute("PRAGMA journal_mode = WAL")  # persistent: set once, at creation
        with self.tx() as db:
            # Re-read inside the lock: another process may have migrated meanwhile.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version, SCHEMA_VERSION):
                log.info("migrating %s to schema v%d", self.path, step + 1)
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ---- jobs -------------------------------------------------------------

    def insert_jobs(self, specs: Sequence[JobSpec], now: float | None = None) -> list[Job]:
        """Store new QUEUED jobs, all or none. Returns them in submit order."""
        now = time.time() if now is None else now
        ids: list[str] = []
        with self.tx() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()[0]
            for spec in specs:
                seq += 1
                job_id = os.urandom(4).hex()  # not `secrets`: its import costs 4 ms
                while db.execute("SELECT 1 FROM jobs WHERE id=?", (job_id,)).fetchone():
                    job_id = os.urandom(4).hex()
                db.execute(
                    "INSERT INTO jobs (id, seq, name, script, args, target, gpu, priority, "
                    "estimate_s, snapshot_sha256, data, outputs, env, autotrack, sweep, state, "
                    "attempt, submitted_at, updated_at, checkpoints) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        job_id, seq, spec.name, spec.script, json.dumps(list(spec.args)),
                        spec.target, spec.gpu.value, spec.priority, spec.estimate_s,
                        spec.snapshot_sha256, json.dumps([d.__dict__ for d in spec.data]),
                        json.dumps([o.__dict__ for o in spec.outputs]),
                        json.dumps([list(kv) for kv in spec.env]), int(spec.autotrack),
                        json.dumps([list(kv) for kv in spec.sweep]), JobState.QUEUED.value,
                        1, now, now, int(spec.checkpoints),
                    ),
                )
                db.execute(
                    "INSERT INTO events (job_id, at, src, dst, message) VALUES (?,?,?,?,?)",
                    (job_id, now, None, JobState.QUEUED.value, f"submitted (target {spec.target})"),
                )
                ids.append(job_id)
        return [self.get(i) for i in ids]

    def get(self, job_id: str) -> Job:
        row = self.db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return job_of(row)

    def resolve(self, ref: str) -> Job:
        """A job by exact id, unique id prefix, or name (the newest of that name)."""
        ref = ref.strip()
        if not ref:
            raise JobNotFoundError("empty job reference")
        row = self.db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=?", (ref,)).fetchone()
        if row:
            return job_of(row)
        rows = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
            (ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
        ).fetchall()
        if len(rows) == 1:
            return job_of(rows[0])
        if len(rows) > 1:
            raise JobNotFoundError(f"job id prefix {ref!r} is ambiguous; give more characters")
        row = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE name=? ORDER BY seq DESC LIMIT 1", (ref,)
        ).fetchone()
        if row:
            return job_of(row)
        raise JobNotFoundError(f"no job matches {ref!r} (by id, id prefix or name)")

    def jobs(
        self,
        states: Iterable[JobState] | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[Job]:
        sql = f"SELECT {JOB_COLUMNS} FROM jobs"
        params: list[Any] = []
        if states is not None:
            wanted = [s.value for s in states]
            # With a LIMIT, walk the seq index and filter (`+state` keeps SQLite from
            # choosing the state index and sorting every match: 10k jobs → 12 ms).
            column = "+state" if limit is not None else "state"
            sql += f" WHERE {column} IN ({','.join('?' * len(wanted))})"
            params += wanted
        sql += " ORDER BY seq DESC" if newest_first else " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [job_of(r) for r in self.db.execute(sql, params)]

    def queued(self) -> list[Job]:
        """QUEUED jobs in scheduling order: priority first, then submit order."""
        rows = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE state='QUEUED' ORDER BY priority DESC, seq"
        )
        return [job_of(r) for r in rows]

    def counts(self) -> dict[JobState, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {JobState(s): n for s, n in rows}

    def transition(
        self,
        job_id: str,
        dst: JobState,
        message: str = "",
        expect: Iterable[JobState] | None = None,
        on_attempt: int | None = None,
        **fields: Any,
    ) -> Job:
        """Move ``job_id`` to ``dst`` if it is in one of ``expect`` (default: every
        legal source of ``dst``) and, when given, still on attempt ``on_attempt``.

        Compare-and-set: exactly one row must change, or IllegalTransitionError is
        raised with the state found. ``fields`` are set in the same statement.
        Appends an event in the same transaction.
        """
        sources = sources_for(dst) if expect is None else frozenset(expect)
        for src in sources:
            check_transition(src, dst)
        now = time.time()
        sets = {"state": dst.value, "updated_at": now, **fields}
        for key in ("progress", "pulled_to"):
            if key in sets and not isinstance(sets[key], str):
                sets[key] = json.dumps(sets[key])
        assignments = ", ".join(f"{k}=?" for k in sets)
        where = f"id=? AND state IN ({','.join('?' * len(sources))})"
        params: list[Any] = [*sets.values(), job_id, *(s.value for s in sources)]
        if on_attempt is not None:
            where += " AND attempt=?"
            params.append(on_attempt)
        with self.tx() as db:
            before = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
            if before is None:
                raise JobNotFoundError(f"no job {job_id!r}")
            cur = db.execute(f"UPDATE jobs SET {assignments} WHERE {where}", params)
            if cur.rowcount != 1:
                raise IllegalTransitionError(
                    f"job {job_id} is {before['state']}; cannot move it to {dst.value}"
                )
            db.execute(
                "INSERT INTO events (job_id, at, src, dst, message) VALUES (?,?,?,?,?)",
                (job_id, now, before["state"], dst.value, message),
            )
        return self.get(job_id)

    def update(self, job_id: str, on_attempt: int | None = None, **fields: Any) -> bool:
        """Set fields without a state change (progress, error). With ``on_attempt``,
        only while the job is still on that attempt (fences stale reports)."""
        if "progress" in fields and not isinstance(fields["progress"], str):
            fields["progress"] = json.dumps(fields["progress"])
        fields["updated_at"] = time.time()
        sql = f"UPDATE jobs SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?"
        params: list[Any] = [*fields.values(), job_id]
        if on_attempt is not None:
            sql += " AND attempt=?"
            params.append(on_attempt)
        with self.tx() as db:
            return db.execute(sql, params).rowcount == 1

    def note(self, job_id: str, message: str) -> None:
        """Append an event that is not a transition."""
        with self.tx() as db:
            db.execute(
                "INSERT INTO events (job_id, at, src, dst, message) VALUES (?,?,?,?,?)",
                (job_id, time.time(), None, None, message),
            )

    def events(self, job_id: str) -> list[Event]:
        rows = self.db.execute(
            "SELECT job_id, at, src, dst, message FROM events WHERE job_id=? ORDER BY id",
            (job_id,),
        )
        return [Event(r["job_id"], r["at"], r["src"], r["dst"], r["message"]) for r in rows]

    # ---- attempts ---------------------------------------------------------

    def start_attempt(self, job_id: str, n: int, worker_id: str) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO attempts (job_id, n, worker_id, assigned_at) "
                "VALUES (?,?,?,?)",
                (job_id, n, worker_id, time.time()),
            )

    def update_attempt(self, job_id: str, n: int, **fields: Any) -> None:
        if not fields:
            return
        sql = f"UPDATE attempts SET {', '.join(f'{k}=?' for k in fields)} WHERE job_id=? AND n=?"
        with self.tx() as db:
            db.execute(sql, [*fields.values(), job_id, n])

    def attempts(self, job_id: str) -> list[Attempt]:
        rows = self.db.execute(
            "SELECT job_id, n, worker_id, assigned_at, started_at, ended_at, outcome, "
            "resumed_from_epoch FROM attempts WHERE job_id=? ORDER BY n",
            (job_id,),
        )
        return [Attempt(**dict(r)) for r in rows]

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


def open_store(path: Path) -> Store:
    return Store(path)
