"""Plain data of orch: the job state machine and the records passed around.

No I/O here. The store applies transitions (compare-and-set in SQL); this module
only says which ones are legal.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import IllegalTransitionError, UsageError


class JobState(str, enum.Enum):
    """Every state a job can be in.

    QUEUED     waiting for a worker (fresh, retried, or re-queued after LOST).
    ASSIGNED   written into a worker's inbox; the worker has not reported yet.
    RUNNING    the worker reported the attempt started.
    SUCCEEDED  the worker sealed a result (result.json written last); not yet here.
    PULLED     the result was verified and its outputs placed in the project.
    FAILED     the script exited non-zero, wrote no output, or could not start.
    LOST       the worker's lease expired mid-attempt; re-queued with attempt+1.
    CANCELLED  the user cancelled it; the worker stopped the run.
    """

    QUEUED = "QUEUED"
    ASSIGNED = "ASSIGNED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PULLED = "PULLED"
    FAILED = "FAILED"
    LOST = "LOST"
    CANCELLED = "CANCELLED"


S = JobState

#: The only legal state changes. ``ASSIGNED → SUCCEEDED/FAILED`` covers a run so
#: quick that the daemon never saw it RUNNING. ``→ QUEUED`` from an ended job is
#: `orch retry`; from LOST it is the re-queue in the same transaction.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.QUEUED: frozenset({S.ASSIGNED, S.CANCELLED}),
    S.ASSIGNED: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, S.LOST, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.LOST, S.CANCELLED}),
    S.SUCCEEDED: frozenset({S.PULLED, S.QUEUED}),
    S.PULLED: frozenset({S.QUEUED}),
    S.FAILED: frozenset({S.QUEUED}),
    S.LOST: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
}

#: The named groups of states: every module uses these, never a list of its own.
#: ACTIVE     the job still needs a worker: waiting for one, or on one
#: ON_WORKER  a worker holds the current attempt
#: UNFINISHED the daemon still has work to do for it (ACTIVE, or a result to pull)
#: TERMINAL   nothing more happens unless the user retries it
#: HAS_RESULT a result was sealed (pulled or not)
ON_WORKER = frozenset({S.ASSIGNED, S.RUNNING})
ACTIVE = frozenset({S.QUEUED, S.LOST}) | ON_WORKER
UNFINISHED = ACTIVE | {S.SUCCEEDED}
TERMINAL = frozenset({S.PULLED, S.FAILED, S.CANCELLED})
HAS_RESULT = frozenset({S.SUCCEEDED, S.PULLED})
#: What `orch retry` accepts: a job that ended, or whose result waits to be pulled.
RETRYABLE = TERMINAL | {S.SUCCEEDED}
#: A partition of every state (tested): where a job is in its life.
BUCKETS: dict[str, frozenset[JobState]] = {
    "waiting": ACTIVE - ON_WORKER,
    "on_worker": ON_WORKER,
    "to_pull": UNFINISHED - ACTIVE,
    "terminal": TERMINAL,
}


def check_transition(src: JobState, dst: JobState) -> None:
    """Raise :class:`IllegalTransitionError` unless ``src → dst`` is legal."""
    if dst not in TRANSITIONS[src]:
        raise IllegalTransitionError(f"illegal transition {src.value} → {dst.value}")


def sources_for(dst: JobState) -> frozenset[JobState]:
    """All states from which ``dst`` may be entered."""
    return frozenset(s for s, targets in TRANSITIONS.items() if dst in targets)


class GpuNeed(str, enum.Enum):
    """What a job asks of a GPU: ``required`` (--gpu), ``none`` (--cpu), or ``any``."""

    REQUIRED = "required"
    NONE = "none"
    ANY = "any"


@dataclass(frozen=True)
class OutputSpec:
    """One output to bring back: ``src`` inside the job's output dir (or its working
    dir), ``dest`` a folder relative to the project root. ``src == "."`` means the
    whole output dir."""

    src: str
    dest: str


@dataclass(frozen=True)
class DataRef:
    """A data file or folder shipped with a job as a content-addressed blob.

    ``path`` is where the worker places it, relative to the job's working dir.
    ``kind`` is ``file`` (blob = the bytes) or ``dir`` (blob = a tar of the folder).
    """

    path: str
    sha256: str
    size: int
    kind: str = "file"


@dataclass(frozen=True)
class JobSpec:
    """Everything `orch submit` decided about one job, before it is stored."""

    name: str
    script: str  # relative to the project root, inside the snapshot
    args: tuple[str, ...]
    target: str  # local | auto | colab | ssh:HOST
    gpu: GpuNeed
    priority: int
    estimate_s: float | None
    snapshot_sha256: str
    data: tuple[DataRef, ...]
    outputs: tuple[OutputSpec, ...]
    env: tuple[tuple[str, str], ...]
    autotrack: bool = False
    sweep: tuple[tuple[str, str], ...] = ()
    checkpoints: bool = False  # uses orch's callbacks (or --auto-track): can resume
    gpu_mem_mb: float | None = None  # GPU memory it needs (--gpu-mem); None: measure it


@dataclass(frozen=True, eq=False)  # compared by id; eq costs CLI start-up time
class Job:
    """A job as stored, with its current state and latest report."""

    id: str
    seq: int
    name: str
    script: str
    args: tuple[str, ...]
    target: str
    gpu: GpuNeed
    priority: int
    estimate_s: float | None
    snapshot_sha256: str
    data: tuple[DataRef, ...]
    outputs: tuple[OutputSpec, ...]
    env: tuple[tuple[str, str], ...]
    autotrack: bool
    state: JobState
    attempt: int
    worker_id: str | None
    submitted_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    progress: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    error: str | None = None
    cancel_requested: bool = False
    pulled_to: tuple[str, ...] = ()
    hub: str = "local"  # the hub of the worker it was last assigned to
    checkpoints: bool = False
    pull_error: str | None = None  # why the sealed result could not be pulled (yet)
    fresh_from: int = 1  # resume only from checkpoints of attempts >= this (retry --fresh)
    placement: str | None = None  # the latest placement decision (JSON), for `orch explain`
    gpu_mem_mb: float | None = None  # GPU memory it needs (--gpu-mem), if known


@dataclass(frozen=True, eq=False)  # compared by id; eq costs CLI start-up time
class Event:
    """One line of a job's history: a transition or a notable happening."""

    job_id: str
    at: float
    src: str | None
    dst: str | None
    message: str


@dataclass(frozen=True, eq=False)  # compared by id; eq costs CLI start-up time
class Attempt:
    """One try of a job on one worker."""

    job_id: str
    n: int
    worker_id: str | None
    assigned_at: float | None
    started_at: float | None
    ended_at: float | None
    outcome: str | None
    resumed_from_epoch: int | None


@dataclass(frozen=True, eq=False)  # compared by id; eq costs CLI start-up time
class WorkerInfo:
    """A worker as the daemon last saw it in the hub."""

    id: str
    name: str
    kind: str  # local | colab | ssh | remote
    host: str
    pid: int | None
    gpu: bool
    gpu_name: str | None
    state: str
    job_id: str | None
    attempt: int | None
    last_seen: float
    gone: bool
    hub: str = "local"  # which of the daemon's hubs it works on
    session_left: float | None = None  # seconds of its session left at last_seen (Colab)
    heartbeat_interval: float | None = None  # how often it says it beats
    slots: int = 1  # attempts it runs at once
    gpu_mem_mb: float | None = None  # GPU memory it shares among its attempts
    only_job: str | None = None  # a per-job worker: the one job it takes
    session_age: float | None = None  # how old its session was at last_seen (Colab)
    account: str | None = None  # whose session it is, if it said

    def time_left(self, now: float) -> float | None:
        """Seconds of session left now (None: no session limit)."""
        return None if self.session_left is None else self.session_left - (now - self.last_seen)

    @property
    def has_session(self) -> bool:
        """Whether it lives in a session that ends (a Colab runtime, or a worker
        given ``--session-hours``)."""
        return self.kind == "colab" or self.session_left is not None

    def session_age_at(self, now: float) -> float | None:
        """How old its session is now (None: it did not say when it began)."""
        return None if self.session_age is None else self.session_age + (now - self.last_seen)


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str, what: str = "duration") -> float:
    """``"40m"`` → 2400.0. Accepts ms, s, m, h, d, or a bare number of seconds;
    also compound forms like ``1h30m``."""
    raw = str(text).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?", raw)
    if not raw or "".join(n + (u or "") for n, u in parts) != raw.replace(" ", ""):
        raise UsageError(f"bad {what} {text!r}: use a number with s, m, h or d (e.g. 40m, 1h30m)")
    return sum(float(n) * _UNITS[u or None] for n, u in parts)


def format_duration(seconds: float | None) -> str:
    """``3725`` → ``"1h02m"``; short and stable for tables."""
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"
