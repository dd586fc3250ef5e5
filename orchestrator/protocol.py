"""The hub layout, in one place: every key the daemon and workers read or write.

Who writes what (one writer per file):

=========================================== ======== =================================
key                                         writer   contents
=========================================== ======== =================================
hub.json                                    daemon   protocol version, project id
blobs/<sha256>                              submit   immutable code/data blobs
jobs/<job>/manifest.json                    daemon   what to run (see Manifest)
workers/<worker>/heartbeat.json             worker   liveness, capabilities, progress
workers/<worker>/inbox/<job>.<n>.json       daemon   assignment of attempt n
runs/<job>/<n>/status.json                  worker   phase, progress, metrics, error
runs/<job>/<n>/log.txt, metrics.jsonl       worker   output of the script
runs/<job>/ckpt/<n>.tar                     worker   checkpoint taken during attempt n
runs/<job>/<n>/result.tar, result.json      worker   result.json written last: seals it
cancel/<job>                                daemon   cancel marker
=========================================== ======== =================================
"""

from __future__ import annotations

PROTOCOL_VERSION = 1

#: Phases a worker reports in status.json.
PHASE_STARTING = "starting"
PHASE_RUNNING = "running"
PHASE_SUCCEEDED = "succeeded"
PHASE_FAILED = "failed"
PHASE_CANCELLED = "cancelled"
TERMINAL_PHASES = frozenset({PHASE_SUCCEEDED, PHASE_FAILED, PHASE_CANCELLED})


def hub_json() -> str:
    return "hub.json"


def blob(sha: str) -> str:
    return f"blobs/{sha}"


def manifest(job_id: str) -> str:
    return f"jobs/{job_id}/manifest.json"


def heartbeat(worker_id: str) -> str:
    return f"workers/{worker_id}/heartbeat.json"


def inbox_dir(worker_id: str) -> str:
    return f"workers/{worker_id}/inbox"


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


def cancel(job_id: str) -> str:
    return f"cancel/{job_id}"
