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
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import IllegalTransitionError, JobNotFoundError, StoreError
from .logs import get_logger
from .models import (
    TERMINAL,
    UNFINISHED,
    Attempt,
    Event,
    GpuNeed,
    Job,
    JobSpec,
    JobState,
    check_transition,
    sources_for,
)
from .schema import (
    CREATED_MARKER,
    JOB_COLUMNS,
    MIGRATIONS,
    SCHEMA_VERSION,
    damaged,
    job_of,
)
from .store_moves import JobMoves
from .store_records import Records

log = get_logger(__name__)

class Store(JobMoves, Records):
    """One connection to a project's state database. Not shared across threads."""

    def __init__(self, path: Path) -> None:
        """Open (or, in a new project, create) the store at ``path``. StoreError, in
        one line, for a file that is not an orch store, and for a store that is gone
        or emptied where this project had one (``store-created`` says so): that is
        refused rather than silently re-created (`orch init --reset` starts over)."""
        self.path = Path(path)
        self.job_moves = 0  # state changes made through this connection (queue_version)
        marker = self.path.with_name(CREATED_MARKER)
        emptied = not self.path.exists() or self.path.stat().st_size == 0
        if emptied and marker.exists():
            raise StoreError(
                f"{self.path} is {'empty' if self.path.exists() else 'missing'}, but this "
                f"project had a store ({marker.name}): restore it from a backup, or run "
                "`orch init --reset` to start over without the old jobs")
        try:
            self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(damaged(self.path, exc)) from exc
        self.db.row_factory = sqlite3.Row
        try:
            self.db.execute("PRAGMA busy_timeout = 30000")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise StoreError(damaged(self.path, exc)) from exc
        if emptied:
            marker.write_text("orch: this project has a store; do not delete it by hand\n")

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
            self._set_wal()
        with self.tx() as db:
            # Re-read inside the lock: another process may have migrated meanwhile.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version, SCHEMA_VERSION):
                log.info("migrating %s to schema v%d", self.path, step + 1)
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _set_wal(self) -> None:
        """WAL journal mode (persistent: set once, at creation). Several first opens
        at once: SQLite may refuse the switch at once, without waiting, while another
        connection creates the schema; tried again for up to 30 s."""
        deadline = time.monotonic() + 30.0
        while True:
            try:
                self.db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

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
                    "attempt, submitted_at, updated_at, checkpoints, gpu_mem_mb) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        job_id, seq, spec.name, spec.script, json.dumps(list(spec.args)),
                        spec.target, spec.gpu.value, spec.priority, spec.estimate_s,
                        spec.snapshot_sha256, json.dumps([d.__dict__ for d in spec.data]),
                        json.dumps([o.__dict__ for o in spec.outputs]),
                        json.dumps([list(kv) for kv in spec.env]), int(spec.autotrack),
                        json.dumps([list(kv) for kv in spec.sweep]), JobState.QUEUED.value,
                        1, now, now, int(spec.checkpoints), spec.gpu_mem_mb,
                    ),
                )
                db.execute(
                    "INSERT INTO events (job_id, at, src, dst, message) VALUES (?,?,?,?,?)",
                    (job_id, now, None, JobState.QUEUED.value, f"submitted (target {spec.target})"),
                )
                ids.append(job_id)
        self.job_moves += 1
        return [self.get(i) for i in ids]

    def get(self, job_id: str) -> Job:
        row = self.db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return job_of(row)

    def resolve(self, ref: str) -> Job:
        """A job by exact id, name (the newest of that name), or unique id prefix: a
        name wins over an id prefix (as git's names win over abbreviated hashes), so a
        job named ``ae`` is never taken for another whose id starts with ``ae``."""
        ref = ref.strip()
        if not ref:
            raise JobNotFoundError("empty job reference")
        row = self.db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id=?", (ref,)).fetchone()
        if row:
            return job_of(row)
        row = self.db.execute(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE name=? ORDER BY seq DESC LIMIT 1", (ref,)
        ).fetchone()
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

    def queued(self, limit: int | None = None,
               kinds: Collection[tuple[str, GpuNeed]] | None = None) -> list[Job]:
        """QUEUED jobs in scheduling order: priority first, then submit order (the
        first ``limit`` of them); only those of ``kinds`` (``--on`` target and GPU
        need) if given."""
        params: list[Any] = []
        where = "state='QUEUED'"
        if kinds is not None:
            if not kinds:
                return []
            where += f" AND (target, gpu) IN (VALUES {', '.join(['(?, ?)'] * len(kinds))})"
            params += [v for target, gpu in kinds for v in (target, gpu.value)]
        sql = f"SELECT {JOB_COLUMNS} FROM jobs WHERE {where} ORDER BY priority DESC, seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [job_of(r) for r in self.db.execute(sql, params)]

    def queued_kinds(self) -> set[tuple[str, GpuNeed]]:
        """The (``--on`` target, GPU need) pairs of the queued jobs (from an index)."""
        rows = self.db.execute("SELECT DISTINCT target, gpu FROM jobs WHERE state='QUEUED'")
        return {(target, GpuNeed(gpu)) for target, gpu in rows}

    def sweep_members(self) -> list[tuple[str, float, tuple[tuple[str, str], ...]]]:
        """``(job id, submitted_at, axis values)`` of every job a ``--sweep`` made, in
        submit order (one sweep's jobs share their ``submitted_at``)."""
        rows = self.db.execute("SELECT id, submitted_at, sweep FROM jobs WHERE sweep != '[]' "
                               "ORDER BY seq")
        return [(i, at, tuple((str(k), str(v)) for k, v in json.loads(sw)))
                for i, at, sw in rows]

    def overview(self, limit: int | None) -> list[Job]:
        """What `orch status` lists, in submit order: every job on a worker, lost, or
        waiting to be pulled; the first ``limit`` queued ones (in scheduling order);
        the ``limit`` newest that ended. ``limit`` None: every job. Its cost does not
        grow with a long queue."""
        if limit is None:
            return self.jobs()
        jobs = self.jobs(UNFINISHED - {JobState.QUEUED}) + self.queued(limit) + self.jobs(
            TERMINAL, limit=limit, newest_first=True)
        return sorted(jobs, key=lambda j: j.seq)

    def queue_version(self) -> tuple[int, int]:
        """Changes whenever the jobs may have changed: another process (the CLI)
        committed (SQLite's ``data_version``), or this connection moved a job. O(1)."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0]), self.job_moves

    def has_jobs(self, states: Iterable[JobState]) -> bool:
        """Whether any job is in one of ``states`` (an index seek, whatever the count)."""
        wanted = [s.value for s in states]
        return self.db.execute(f"SELECT 1 FROM jobs WHERE state IN "
                               f"({','.join('?' * len(wanted))}) LIMIT 1",
                               wanted).fetchone() is not None

    def queued_targets(self) -> dict[str, int]:
        """The ``--on`` targets of the queued jobs, each with how many wait for it
        (which places have work waiting, and how much)."""
        rows = self.db.execute("SELECT target, COUNT(*) FROM jobs WHERE state='QUEUED' "
                               "GROUP BY target")
        return {target: n for target, n in rows}

    def counts(self) -> dict[JobState, int]:
        rows = self.db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        return {JobState(s): n for s, n in rows}

    def _move(self, db: sqlite3.Connection, job_id: str, dst: JobState, message: str,
              expect: Iterable[JobState] | None, on_attempt: int | None,
              fields: dict[str, Any], now: float) -> JobState:
        """One compare-and-set inside the open transaction ``db``; returns the state
        the job left. IllegalTransitionError (with the state found) if it lost."""
        sources = sources_for(dst) if expect is None else frozenset(expect)
        for src in sources:
            check_transition(src, dst)
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
        before = db.execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        if before is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        if db.execute(f"UPDATE jobs SET {assignments} WHERE {where}", params).rowcount != 1:
            raise IllegalTransitionError(
                f"job {job_id} is {before['state']}; cannot move it to {dst.value}")
        self.job_moves += 1
        db.execute("INSERT INTO events (job_id, at, src, dst, message) VALUES (?,?,?,?,?)",
                   (job_id, now, before["state"], dst.value, message))
        return JobState(before["state"])

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
        with self.tx() as db:
            self._move(db, job_id, dst, message, expect, on_attempt, fields, time.time())
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

def open_store(path: Path) -> Store:
    return Store(path)
