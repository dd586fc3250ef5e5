"""The SQLite file ``.orch/state.db``: its migrations, how a row of the jobs table
becomes a :class:`~orchestrator.models.Job`, what is said when the file cannot be
used, and how `orch init --reset` moves it aside. Used by the store."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from .models import DataRef, GpuNeed, Job, JobState, OutputSpec

# Each entry migrates from version i to i+1. Never edit a released entry: append.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        name TEXT NOT NULL,
        script TEXT NOT NULL,
        args TEXT NOT NULL,
        target TEXT NOT NULL,
        gpu TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        estimate_s REAL,
        snapshot_sha256 TEXT NOT NULL,
        data TEXT NOT NULL,
        outputs TEXT NOT NULL,
        env TEXT NOT NULL,
        autotrack INTEGER NOT NULL DEFAULT 0,
        sweep TEXT NOT NULL DEFAULT '[]',
        state TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        worker_id TEXT,
        submitted_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        progress TEXT NOT NULL DEFAULT '{}',
        exit_code INTEGER,
        error TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        pulled_to TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX jobs_state ON jobs(state, priority DESC, seq);
    CREATE INDEX jobs_name ON jobs(name, seq);
    CREATE TABLE attempts (
        job_id TEXT NOT NULL REFERENCES jobs(id),
        n INTEGER NOT NULL,
        worker_id TEXT,
        assigned_at REAL,
        started_at REAL,
        ended_at REAL,
        outcome TEXT,
        resumed_from_epoch INTEGER,
        PRIMARY KEY (job_id, n)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        at REAL NOT NULL,
        src TEXT,
        dst TEXT,
        message TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_job ON events(job_id, id);
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER,
        gpu INTEGER NOT NULL DEFAULT 0,
        gpu_name TEXT,
        state TEXT NOT NULL,
        job_id TEXT,
        attempt INTEGER,
        seq INTEGER NOT NULL DEFAULT -1,
        last_seen REAL NOT NULL,
        gone INTEGER NOT NULL DEFAULT 0,
        info TEXT NOT NULL DEFAULT '{}'
    );
    """,
    # v2: several hubs (the local folder hub and a Drive hub): where each worker and
    # each assigned job lives.
    """
    ALTER TABLE workers ADD COLUMN hub TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE jobs ADD COLUMN hub TEXT NOT NULL DEFAULT 'local';
    """,
    # v3: Colab sessions end: whether a job checkpoints (it may start on a worker whose
    # session is shorter than the job), and the session time a worker has left.
    """
    ALTER TABLE jobs ADD COLUMN checkpoints INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workers ADD COLUMN session_left REAL;
    """,
    # v4: what orch placed in the project (by pulls): never part of a later snapshot,
    # and a pull that replaces another job's delivery says so.
    """
    CREATE TABLE deliveries (
        path TEXT PRIMARY KEY,
        job_id TEXT NOT NULL,
        at REAL NOT NULL
    );
    """,
    # v5: a pull that failed says why (and `--wait` stops waiting); `orch retry --fresh`
    # ignores the checkpoints of earlier attempts.
    """
    ALTER TABLE jobs ADD COLUMN pull_error TEXT;
    ALTER TABLE jobs ADD COLUMN fresh_from INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX jobs_state_changed ON jobs(state, updated_at);
    CREATE INDEX jobs_state_target ON jobs(state, target);
    """,
    # v6: placement: what finished attempts took where (estimates and speeds are learned
    # from it), each queued job's latest placement decision, a job's GPU memory, and
    # what a worker offers (attempts at once, GPU memory) without parsing its heartbeat.
    """
    CREATE TABLE runs (
        job_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        workload TEXT NOT NULL,
        device TEXT NOT NULL,
        epochs INTEGER,
        epoch_seconds REAL,
        seconds REAL NOT NULL,
        gpu_mem_mb REAL,
        at REAL NOT NULL,
        PRIMARY KEY (job_id, attempt)
    );
    CREATE INDEX runs_workload ON runs(workload);
    ALTER TABLE jobs ADD COLUMN placement TEXT;
    ALTER TABLE jobs ADD COLUMN gpu_mem_mb REAL;
    ALTER TABLE workers ADD COLUMN slots INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE workers ADD COLUMN gpu_mem_mb REAL;
    ALTER TABLE workers ADD COLUMN heartbeat_interval REAL;
    """,
    # v7: placement reads only the queued jobs some server may take (by --on and
    # --gpu, from an index); workers recorded before v6 keep what their heartbeat said.
    """
    DROP INDEX IF EXISTS jobs_state_target;
    CREATE INDEX jobs_state_kind ON jobs(state, target, gpu);
    UPDATE workers SET
        heartbeat_interval = json_extract(info, '$.capabilities.heartbeat_interval'),
        slots = MAX(1, COALESCE(json_extract(info, '$.capabilities.slots'), 1)),
        gpu_mem_mb = json_extract(info, '$.capabilities.gpu_mem_mb')
    WHERE json_valid(info) AND heartbeat_interval IS NULL;
    """,
    # v8: a per-job worker (`orch worker --job`, a per-job notebook) takes only its job
    """
    ALTER TABLE workers ADD COLUMN only_job TEXT;
    """,
    # v9: sessions as they really are: how old a worker's session was at its last
    # heartbeat and whose it is; the sessions that ended (heartbeats stopped without a
    # clean stop: placement learns how long they last); a job's losses to session ends.
    """
    ALTER TABLE workers ADD COLUMN session_age REAL;
    ALTER TABLE workers ADD COLUMN account TEXT;
    CREATE TABLE sessions (
        worker_id TEXT PRIMARY KEY,
        account TEXT NOT NULL DEFAULT '',
        seconds REAL NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX sessions_at ON sessions(at);
    ALTER TABLE jobs ADD COLUMN session_losses INTEGER NOT NULL DEFAULT 0;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

JOB_COLUMNS = (
    "id, seq, name, script, args, target, gpu, priority, estimate_s, snapshot_sha256, data, "
    "outputs, env, autotrack, state, attempt, worker_id, submitted_at, updated_at, started_at, "
    "finished_at, progress, exit_code, error, cancel_requested, pulled_to, hub, checkpoints, "
    "pull_error, fresh_from, placement, gpu_mem_mb"
)


def job_of(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        seq=row["seq"],
        name=row["name"],
        script=row["script"],
        args=tuple(json.loads(row["args"])),
        target=row["target"],
        gpu=GpuNeed(row["gpu"]),
        priority=row["priority"],
        estimate_s=row["estimate_s"],
        snapshot_sha256=row["snapshot_sha256"],
        data=tuple(DataRef(**d) for d in json.loads(row["data"])),
        outputs=tuple(OutputSpec(**o) for o in json.loads(row["outputs"])),
        env=tuple((k, v) for k, v in json.loads(row["env"])),
        autotrack=bool(row["autotrack"]),
        state=JobState(row["state"]),
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        submitted_at=row["submitted_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        progress=json.loads(row["progress"]),
        exit_code=row["exit_code"],
        error=row["error"],
        cancel_requested=bool(row["cancel_requested"]),
        pulled_to=tuple(json.loads(row["pulled_to"])),
        hub=row["hub"],
        checkpoints=bool(row["checkpoints"]),
        pull_error=row["pull_error"],
        fresh_from=row["fresh_from"],
        placement=row["placement"],
        gpu_mem_mb=row["gpu_mem_mb"],
    )


CREATED_MARKER = "store-created"


def damaged(path: Path, exc: BaseException) -> str:
    """One line for a store SQLite cannot use: it is kept as it is for inspection."""
    import os

    if "readonly" in str(exc) or not os.access(path.parent, os.W_OK):
        return (f"{path.parent} is read-only: orch needs to write its state there "
                f"({exc})")
    if "unable to open" in str(exc):
        return f"cannot open {path}: {exc}"
    if isinstance(exc, sqlite3.OperationalError) and ("full" in str(exc) or "disk" in str(exc)):
        return f"cannot write {path}: {exc}"
    return (f"{path} is damaged or not an orch store ({exc}); it was left as it is for "
            "inspection: restore it from a backup, or run `orch init --reset` to start over")


def reset_store(path: Path) -> Path:
    """Move the store at ``path`` (and its WAL files, and the marker that it existed)
    aside into a new ``reset-<time>/`` folder beside it; return that folder. The
    daemon must not be running (its lock is checked by the caller's CLI)."""
    import os

    aside = path.with_name(f"reset-{time.strftime('%Y%m%d-%H%M%S')}")
    aside.mkdir()
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm", CREATED_MARKER):
        if (path.parent / name).exists():
            os.replace(path.parent / name, aside / name)
    return aside
