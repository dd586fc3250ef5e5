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
import types
import typing
from functools import cache
from typing import Any, ClassVar, TypeVar

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
        out.update(_encode(self))
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
        return typing.cast(D, _decode(cls, raw, cls.NAME))

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
    python: str = ""
    orch: str = ""


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
    job_id: str | None = None
    attempt: int | None = None
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


@dataclasses.dataclass(frozen=True)
class Cancel(Document):
    """The user cancelled ``job_id``: its worker stops the run."""

    NAME: ClassVar[str] = "cancel"
    job_id: str
    at: float


# ---- encoding ------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _decode(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _decode(inner[0], value, where)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _decode(hints[f.name], value[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ProtocolError(f"{where}: missing {f.name!r}")
        return tp(**kwargs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ProtocolError(f"{where}: unknown value {value!r}") from None
    if origin is tuple:
        if not isinstance(value, list):
            raise ProtocolError(f"{where}: expected a list")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ProtocolError(f"{where}: expected {len(args)} items")
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ProtocolError(f"{where}: expected an object")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp in (str, bool) and not isinstance(value, tp):
        raise ProtocolError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


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
