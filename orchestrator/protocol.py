"""The hub protocol, in one place: every key the daemon and workers read or write,
and a frozen dataclass for every document stored under those keys.

Who writes what (one writer per file):

=========================================== ======== =================================
key                                         writer   document
=========================================== ======== =================================
hub.json                                    project  :class:`HubInfo` (protocol version)
blobs/<sha256>                              project  immutable code/data blobs, wheels
jobs/<job>/manifest.json                    daemon   :class:`Manifest` (signed)
workers/<worker>/heartbeat.json             worker   :class:`Heartbeat`
workers/<worker>/inbox/<job>.<n>.json       daemon   :class:`Assignment` (signed)
runs/<job>/<n>/status.json                  worker   :class:`RunStatus`
runs/<job>/<n>/log.txt, metrics.jsonl       worker   output of the script
runs/<job>/ckpt/<n>.tar                     worker   checkpoint taken during attempt n
runs/<job>/<n>/result.tar, result.json      worker   :class:`Seal`, written last: seals it
cancel/<job>                                daemon   :class:`Cancel`
notebooks/<name>.ipynb                      project  Colab notebooks (``orch colab``)
=========================================== ======== =================================

"project" is the user's machine: the daemon, or ``orch submit``/``orch colab``.

Every document carries the protocol version of its writer (``protocol``); reading
one of another version raises :class:`ProtocolError` with a line that says so.
``hub.json`` records the version a hub speaks; the daemon writes it once and
refuses a hub of another version or another project, and workers refuse to work
on a hub whose version they do not speak.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing
from typing import Any, ClassVar, TypeVar

from .codec import decode, encode
from .errors import ProtocolError
from .models import DataRef, GpuNeed, OutputSpec

PROTOCOL_VERSION = 2

D = TypeVar("D", bound="Document")


class WorkerState(str, enum.Enum):
    """What a worker says it is doing."""

    IDLE = "idle"
    BUSY = "busy"
    STOPPED = "stopped"  # its last heartbeat: it exited


class Phase(str, enum.Enum):
    """Where an attempt is, as its worker reports it."""

    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


# ---- documents ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Document:
    """Base of every hub document: JSON with the writer's protocol version."""

    NAME: ClassVar[str] = "document"

    def to_dict(self) -> dict[str, Any]:
        out = {"protocol": PROTOCOL_VERSION}
        out.update(encode(self))
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True).encode()

    @classmethod
    def from_dict(cls: type[D], raw: Any) -> D:
        """Check the version and every field; :class:`ProtocolError` names what is wrong."""
        if not isinstance(raw, dict):
            raise ProtocolError(f"{cls.NAME}: not a JSON object")
        version = raw.get("protocol")
        if version != PROTOCOL_VERSION:
            raise ProtocolError(
                f"{cls.NAME} was written by orch speaking hub protocol {version or 1}; this "
                f"orch speaks protocol {PROTOCOL_VERSION}: run the same orch version on both "
                "sides")
        return typing.cast(D, decode(cls, raw, cls.NAME))

    @classmethod
    def from_json(cls: type[D], data: bytes) -> D:
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise ProtocolError(f"{cls.NAME}: not valid JSON ({exc})") from exc
        return cls.from_dict(raw)


@dataclasses.dataclass(frozen=True)
class HubInfo(Document):
    """``hub.json``: which protocol the hub speaks and whose it is."""

    NAME: ClassVar[str] = "hub.json"
    project_id: str
    orch: str
    created_at: float


@dataclasses.dataclass(frozen=True)
class Manifest(Document):
    """What to run for one job. The blobs it names are checked by their sha256."""

    NAME: ClassVar[str] = "manifest"
    job_id: str
    name: str
    script: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    snapshot: str
    data: tuple[DataRef, ...]
    outputs: tuple[OutputSpec, ...]
    gpu: GpuNeed
    autotrack: bool
    signature: str = ""


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a worker can offer, in its heartbeat."""

    kind: str  # local | remote | colab | ssh | ray
    gpu: bool = False
    gpu_name: str | None = None
    cuda_visible_devices: str | None = None
    cpus: int | None = None
    heartbeat_interval: float | None = None
    session_left: float | None = None  # seconds left in its session when it beat
    # when its session began (its clock; a Colab runtime's start, not the worker's):
    # with the heartbeat's ``time``, how old the session was when it beat
    session_started: float | None = None
    account: str | None = None  # whose session it is (Colab: the signed-in account)
    python: str = ""
    orch: str = ""
    slots: int = 1  # attempts it runs at once (a GPU worker that packs jobs: more)
    gpu_mem_mb: float | None = None  # its GPU's memory, when it packs jobs by memory
    only_job: str | None = None  # a per-job worker (`--job`): it takes that job only


@dataclasses.dataclass(frozen=True)
class RunRef:
    """An attempt a worker is running."""

    job_id: str
    attempt: int


@dataclasses.dataclass(frozen=True)
class Heartbeat(Document):
    """A worker's liveness and state. ``seq`` advances with every beat: the daemon
    judges liveness by its own clock when seq moves, never by ``time``."""

    NAME: ClassVar[str] = "heartbeat"
    worker_id: str
    name: str
    host: str
    pid: int | None
    seq: int
    state: WorkerState
    capabilities: Capabilities
    job_id: str | None = None  # the first of ``running``
    attempt: int | None = None
    running: tuple[RunRef, ...] = ()  # every attempt it runs (several: a shared GPU)
    progress: dict[str, Any] = dataclasses.field(default_factory=dict)
    started: float = 0.0
    time: float = 0.0


@dataclasses.dataclass(frozen=True)
class Assignment(Document):
    """Attempt ``attempt`` of ``job_id`` is this worker's to run."""

    NAME: ClassVar[str] = "assignment"
    job_id: str
    attempt: int
    worker_id: str
    assigned_at: float
    resume_from: int = 1  # restore checkpoints of attempts >= this (retry --fresh)
    # seconds without a heartbeat after which the daemon re-queues the job (0: not said);
    # a worker cut off from the hub for that long stops the run
    lease_ttl: float = 0.0
    signature: str = ""


@dataclasses.dataclass(frozen=True)
class RunStatus(Document):
    """One attempt as its worker reports it."""

    NAME: ClassVar[str] = "run status"
    job_id: str
    attempt: int
    worker_id: str
    phase: Phase
    started_at: float
    updated: float = 0.0
    progress: dict[str, Any] = dataclasses.field(default_factory=dict)
    resumed_from_epoch: int | None = None
    restored_checkpoint_of_attempt: int | None = None
    pid: int | None = None
    error: str | None = None
    exit_code: int | None = None
    log_tail: str = ""
    ended_at: float | None = None
    result_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class SealedFile:
    name: str
    size: int


@dataclasses.dataclass(frozen=True)
class Seal(Document):
    """``result.json``: the result archive's checksum and contents; written last."""

    NAME: ClassVar[str] = "seal"
    job_id: str
    attempt: int
    sha256: str
    size: int
    files: tuple[SealedFile, ...]
    sealed_at: float
    tensorflow: str | None = None  # the version in the job's environment (None: none)


@dataclasses.dataclass(frozen=True)
class Cancel(Document):
    """The user cancelled ``job_id``: its worker stops the run."""

    NAME: ClassVar[str] = "cancel"
    job_id: str
    at: float


# ---- keys ----------------------------------------------------------------------------


def hub_json() -> str:
    return "hub.json"


def blob(sha: str) -> str:
    return f"blobs/{sha}"


def manifest(job_id: str) -> str:
    return f"jobs/{job_id}/manifest.json"


WORKERS = "workers"


def worker_dir(worker_id: str) -> str:
    return f"{WORKERS}/{worker_id}"


def heartbeat(worker_id: str) -> str:
    return f"{worker_dir(worker_id)}/heartbeat.json"


def inbox_dir(worker_id: str) -> str:
    return f"{worker_dir(worker_id)}/inbox"


def inbox(worker_id: str, job_id: str, attempt: int) -> str:
    return f"{inbox_dir(worker_id)}/{job_id}.{attempt}.json"


def parse_inbox_name(name: str) -> tuple[str, int] | None:
    """``"ab12cd34.2.json"`` → ``("ab12cd34", 2)``; None for anything else."""
    if not name.endswith(".json"):
        return None
    job_id, _, n = name[: -len(".json")].rpartition(".")
    return (job_id, int(n)) if job_id and n.isdigit() else None


def run_dir(job_id: str, attempt: int) -> str:
    return f"runs/{job_id}/{attempt}"


def status(job_id: str, attempt: int) -> str:
    return f"{run_dir(job_id, attempt)}/status.json"


def log(job_id: str, attempt: int) -> str:
    return f"{run_dir(job_id, attempt)}/log.txt"


def metrics(job_id: str, attempt: int) -> str:
    return f"{run_dir(job_id, attempt)}/metrics.jsonl"


def result_tar(job_id: str, attempt: int) -> str:
    return f"{run_dir(job_id, attempt)}/result.tar"


def result_json(job_id: str, attempt: int) -> str:
    return f"{run_dir(job_id, attempt)}/result.json"


def ckpt_dir(job_id: str) -> str:
    return f"runs/{job_id}/ckpt"


def ckpt(job_id: str, attempt: int) -> str:
    return f"{ckpt_dir(job_id)}/{attempt}.tar"


def parse_ckpt_name(name: str) -> int | None:
    """``"3.tar"`` → 3; None for anything else."""
    stem = name.removesuffix(".tar")
    return int(stem) if name.endswith(".tar") and stem.isdigit() else None


def cancel(job_id: str) -> str:
    return f"cancel/{job_id}"


def notebook(name: str) -> str:
    return f"notebooks/{name}.ipynb"
