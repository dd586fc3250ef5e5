"""How a worker runs (:class:`WorkerConfig`) and its command line
(``python -m orchestrator.worker`` / ``orch worker``), parsed into one.

Kept apart from :mod:`orchestrator.worker` (the loop) so that each stays small; the
worker module re-exports both names.
"""

from __future__ import annotations

import argparse
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .signing import load_key

DESCRIPTION = ("The orch worker: takes signed assignments from a hub, runs each job, "
               "streams progress and logs back, and seals the result.")


@dataclass(frozen=True)
class WorkerConfig:
    """How one worker runs. ``gpu`` is the CUDA device index it owns, if any."""

    hub: str
    name: str
    work_dir: Path
    kind: str = "local"
    burst: bool = False
    idle_timeout: float = 60.0
    heartbeat_interval: float = 1.0
    poll_interval: float = 0.2
    check_interval: float = 1.0
    log_interval: float = 1.0
    gpu: str | None = None
    gpu_name: str | None = None
    session_hours: float | None = None
    session_start: str = "process"  # process | runtime | epoch seconds (sessions.py)
    account: str | None = None  # whose session this is (placement learns per account)
    only_job: str | None = None
    worker_id: str = field(default="")
    credentials: str | None = None
    key: str | None = field(default=None, repr=False)  # the project's signing key (hex)
    slots: int = 1  # attempts run at once (a GPU shared by several small jobs: more)
    gpu_mem_mb: float | None = None  # the GPU's memory, which the daemon packs jobs into
    retry_max: float = 30.0  # most seconds between tries while the hub is away
    lease_ttl: float | None = None  # the lease, when the assignment does not say it


def hub_folder(url: str) -> Path | None:
    """The folder of a folder hub's url (None for Drive and other hubs)."""
    scheme, sep, rest = url.partition(":")
    if sep and scheme in ("drive", "sftp", "ssh"):
        return None
    return Path(rest if sep and scheme == "folder" else url).expanduser().resolve()


def parse_args(argv: list[str] | None = None) -> WorkerConfig:
    p = argparse.ArgumentParser(prog="orch worker", description=DESCRIPTION)
    p.add_argument("--hub", required=True, help="hub folder (or URL) to work for")
    p.add_argument("--name", default=socket.gethostname(), help="worker name (display)")
    p.add_argument("--kind", default=None,
                   help="local | remote | colab | ssh | ray (default: local for a folder hub, "
                        "else remote)")
    p.add_argument("--credentials", default=None,
                   help="Drive credentials file (default: $ORCH_DRIVE_CREDENTIALS)")
    p.add_argument("--poll", type=float, default=None,
                   help="seconds between inbox checks (default 0.2 on a folder, 2 on Drive)")
    p.add_argument("--work-dir", default=None, help="scratch folder for runs")
    p.add_argument("--burst", action="store_true", help="exit when the inbox is empty")
    p.add_argument("--idle-timeout", type=float, default=60.0, help="exit after S idle")
    p.add_argument("--heartbeat", type=float, default=None,
                   help="heartbeat interval in seconds (default 1 on a folder, 5 on Drive)")
    p.add_argument("--gpu", default=None, help="CUDA device index this worker owns")
    p.add_argument("--gpu-name", default=None)
    p.add_argument("--session-hours", type=float, default=None,
                   help="the session's cap: it reports the time left of it")
    p.add_argument("--session-start", default="process",
                   help="when its session began: process (default), runtime (the machine's "
                        "or container's first process: a Colab runtime) or epoch seconds")
    p.add_argument("--account", default=None,
                   help="whose session it is (placement learns session lengths per account)")
    p.add_argument("--job", default=None, help="run this one job, then exit")
    p.add_argument("--id", default="", help="fixed worker id (default: NAME-<random>)")
    p.add_argument("--slots", type=int, default=1,
                   help="attempts to run at once (jobs sharing one GPU; default 1)")
    p.add_argument("--gpu-mem", type=float, default=None,
                   help="the GPU's memory in MB, which the daemon packs jobs into")
    p.add_argument("--retry-max", type=float, default=30.0,
                   help="most seconds between tries while the hub does not answer (default "
                        "30); the worker keeps trying for as long as its lease could hold")
    p.add_argument("--lease", type=float, default=None,
                   help="the daemon's lease in seconds, if the assignments do not say it "
                        "(the run stops when the hub was away for longer)")
    p.add_argument("--key-file", default=None,
                   help="the project's key, to check that jobs come from it: its "
                        ".orch/project.json (default: $ORCH_HUB_KEY, or the project around "
                        "a folder hub)")
    a = p.parse_args(argv)
    work = Path(a.work_dir) if a.work_dir else Path.home() / ".cache" / "orch" / "work"
    remote = a.hub.startswith("drive:")
    return WorkerConfig(
        hub=a.hub, name=a.name, work_dir=work, kind=a.kind or ("remote" if remote else "local"),
        burst=a.burst, credentials=a.credentials,
        poll_interval=a.poll if a.poll is not None else (2.0 if remote else 0.2),
        check_interval=5.0 if remote else 1.0, log_interval=10.0 if remote else 1.0,
        heartbeat_interval=a.heartbeat or (5.0 if remote else 1.0),
        idle_timeout=a.idle_timeout, gpu=a.gpu,
        gpu_name=a.gpu_name, session_hours=a.session_hours, only_job=a.job,
        session_start=a.session_start, account=a.account, worker_id=a.id,
        key=load_key(a.key_file) if a.key_file else None,
        slots=max(1, a.slots), gpu_mem_mb=a.gpu_mem,
        retry_max=max(0.1, a.retry_max), lease_ttl=a.lease,
    )
